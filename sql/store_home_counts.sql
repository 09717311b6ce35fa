-- Per customer, source and currency or country: how many postings (special-category MCCs left out) were in it,
-- over the whole history. The life-event features take the most frequent as the customer's home currency and
-- country (sql/features_life_events.sql). Sums, so that merging new rows into the previous state gives what a
-- rebuild gives.
-- Reads: day_rows, previous_home_counts.
with parts as (
    select customer_id, source, 'currency' as kind, currency as value, sum(n) as n
    from day_rows
    where not is_forbidden and currency is not null
    group by all
    union all
    select customer_id, source, 'country' as kind, country as value, sum(n) as n
    from day_rows
    where not is_forbidden and country is not null
    group by all
    union all
    select customer_id, source, kind, value, n from previous_home_counts
),

final as (
    select customer_id, source, kind, value, cast(sum(n) as bigint) as n
    from parts
    group by all
)

select * from final
