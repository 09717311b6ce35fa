-- Consent events of this load, for customers the bank knows; the rest is rejected with a reason.
with delivered as (
    select customer_id, purpose, granted, recorded_at, expires_at, source_file, source_line
    from bronze_consents
),

final as (
    select
        delivered.customer_id,
        delivered.purpose,
        delivered.granted,
        delivered.recorded_at,
        delivered.expires_at,
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
