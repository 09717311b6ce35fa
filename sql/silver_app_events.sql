-- App events of this load (config/landing.yaml app_events), bucketed by customer. Rejected (quarantined, stage
-- conform): an event of a customer the bank does not know; an event whose channel does not fit its type (a
-- notification is opened or dismissed on push or inapp; a screen, a feature or a search happens in the app or on the
-- web); an event_id delivered twice in this load (the key is unique within a file, not across files) or already
-- loaded within ingest.dedup_lookback_days (an analytics batch delivered twice). Consent is not applied here: the
-- events are the bank's own data; the profile_customers stage reads them only for customers whose personalization
-- consent holds on D.
with repeated_ids as (
    select event_id
    from bronze_app_events
    group by event_id
    having count(*) > 1
),

-- Only the ids delivered more than once are ranked: a hash aggregate finds them, far cheaper than a window over all.
delivered as (
    select event_id, customer_id, occurred_at, event_type, target, channel, source_file, source_line,
        row_number() over (partition by event_id order by source_file, source_line) as n_delivery
    from bronze_app_events
    semi join repeated_ids using (event_id)
    union all by name
    select event_id, customer_id, occurred_at, event_type, target, channel, source_file, source_line,
        1 as n_delivery
    from bronze_app_events
    anti join repeated_ids using (event_id)
),

judged as (
    select
        delivered.*,
        customers.bucket,
        loaded.load_date as loaded_on,
        event_type in ('notification_opened', 'notification_dismissed') as is_notification
    from delivered
    left join customers_d as customers on delivered.customer_id = customers.customer_id
    left join loaded_app_events as loaded on delivered.event_id = loaded.event_id
),

final as (
    select
        event_id,
        customer_id,
        occurred_at,
        event_type,
        target,
        channel,
        bucket,
        getvariable('load_date') as load_date,
        source_file,
        source_line,
        case
            when bucket is null then 'unknown customer_id'
            when n_delivery > 1 then 'duplicate event_id within this load'
            when loaded_on is not null then 'duplicate event_id, already loaded on ' || loaded_on
            when is_notification and channel not in ('push', 'inapp')
                then 'a notification is opened or dismissed on push or inapp, not on ' || channel
            when not is_notification and channel not in ('app', 'web')
                then event_type || ' happens in the app or on the web, not on ' || channel
        end as reject_reason,
        case
            when bucket is null then 'customer_id'
            when n_delivery > 1 or loaded_on is not null then 'event_id'
            else 'channel'
        end as reject_column,
        case
            when bucket is null then customer_id
            when n_delivery > 1 or loaded_on is not null then event_id
            else channel
        end as reject_value,
        cast(null as varchar) as skip_reason
    from judged
)

select * from final
