-- Per customer, source and life-event stream (an income by salary, benefit or pension, or an outgoing direct debit
-- or standing order, by payer or payee and kind): the day of its first posting over the whole history
-- (special-category MCCs and own-account transfers left out, as in sql/features_life_events.sql). A stream is new
-- when that day is recent. All-time minima, so that merging gives what a rebuild gives.
-- Reads: day_rows, previous_stream_first.
with life_event_rows as (
    select *,
        is_own_transfer or (channel in ('transfer_in', 'transfer_out') and is_transfer_text) as is_le_own
    from day_rows
    where not is_forbidden
),

parts as (
    select customer_id, source, stream_key, outflow_kind as kind, 'out' as direction, min(ds) as first_day
    from life_event_rows
    where outflow_kind is not null and not is_le_own
    group by all
    union all
    select customer_id, source, stream_key, income_kind as kind, 'in' as direction, min(ds) as first_day
    from life_event_rows
    where income_kind is not null and not is_le_own
    group by all
    union all
    select customer_id, source, stream_key, kind, direction, first_day from previous_stream_first
),

final as (
    select customer_id, source, stream_key, kind, direction, min(first_day) as first_day
    from parts
    group by all
)

select * from final
