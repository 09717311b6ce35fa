-- Per customer and source (core, open banking), what the life-event features need from the whole history: the
-- first posting (special-category MCCs left out, as in every life-event feature). All-time minima, so that merging
-- new rows into the previous state gives what a rebuild gives.
-- Reads: day_rows, previous_customer_state.
with parts as (
    select customer_id, source, min(ds) as first_posting_day
    from day_rows
    where not is_forbidden
    group by all
    union all
    select customer_id, source, first_posting_day from previous_customer_state
),

final as (
    select customer_id, source, min(first_posting_day) as first_posting_day
    from parts
    group by all
)

select * from final
