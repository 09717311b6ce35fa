-- CRM response events of this load; events of customers the bank does not know are rejected.
with delivered as (
    select recommendation_id, customer_id, action_id, channel, event, event_at, source_file, source_line
    from bronze_crm_responses
),

final as (
    select
        delivered.recommendation_id,
        delivered.customer_id,
        delivered.action_id,
        delivered.channel,
        delivered.event,
        delivered.event_at,
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
