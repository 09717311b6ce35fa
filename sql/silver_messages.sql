-- Customer messages of this load; messages of customers the bank does not know are rejected. The text is personal
-- data: it stays in this table (no warehouse view), read only by the understand_messages stage.
with delivered as (
    select message_id, customer_id, received_at, channel, text, source_file, source_line
    from bronze_messages
),

final as (
    select
        delivered.message_id,
        delivered.customer_id,
        delivered.received_at,
        delivered.channel,
        delivered.text,
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
