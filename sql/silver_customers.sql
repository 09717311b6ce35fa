-- Customers as of D: the latest delivered upsert per customer wins over the previous snapshot.
with previous as (
    select customer_id, birth_year, region, customer_since, known_vulnerability, updated_load_date
    from prev_customers
),

delivered as (
    select customer_id, birth_year, region, customer_since, known_vulnerability,
        getvariable('load_date') as updated_load_date
    from bronze_customers
    qualify row_number() over (partition by customer_id order by source_file desc, source_line desc) = 1
),

merged as (
    select * from delivered
    union all by name
    select * from previous
    where customer_id not in (select customer_id from delivered)
),

final as (
    select
        customer_id,
        birth_year,
        region,
        customer_since,
        known_vulnerability,
        customer_bucket(customer_id) as bucket,
        updated_load_date
    from merged
)

select * from final
