-- Life events declared by customers in this load (training labels); unknown customers are rejected.
with delivered as (
    select customer_id, event_type, event_date, source, source_file, source_line
    from bronze_life_events
),

final as (
    select
        delivered.customer_id,
        delivered.event_type,
        delivered.event_date,
        delivered.source,
        customers.bucket,
        getvariable('load_date') as load_date,
        delivered.source_file,
        delivered.source_line,
        case when customers.customer_id is null then 'unknown customer_id' end as reject_reason,
        'customer_id' as reject_column,
        delivered.customer_id as reject_value,
        cast(null as varchar) as skip_reason
    from delivered
    left join customers_d as customers on delivered.customer_id = customers.customer_id
)

select * from final
