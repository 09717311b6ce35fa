-- Consent per customer and purpose at the end of D: the latest event wins (a withdrawal wins a tie), an expired
-- grant is a withdrawal, no event means no consent, except service alerts, which hold unless withdrawn.
with events as (
    select customer_id, purpose, granted, recorded_at, expires_at
    from consent_events
    where recorded_at < getvariable('day_end')
),

latest as (
    select *
    from events
    qualify row_number() over (
        partition by customer_id, purpose order by recorded_at desc, granted asc
    ) = 1
),

effective as (
    select
        customer_id,
        purpose,
        granted and (expires_at is null or expires_at >= getvariable('day_end')) as is_allowed
    from latest
),

final as (
    select
        customers.customer_id,
        coalesce(bool_or(is_allowed) filter (where purpose = 'personalization'), false) as is_personalization_allowed,
        coalesce(bool_or(is_allowed) filter (where purpose = 'open_banking'), false) as is_open_banking_allowed,
        coalesce(bool_or(is_allowed) filter (where purpose = 'life_events'), false) as is_life_events_allowed,
        coalesce(bool_or(is_allowed) filter (where purpose = 'location'), false) as is_location_allowed,
        coalesce(bool_or(is_allowed) filter (where purpose = 'marketing_email'), false) as is_marketing_email_allowed,
        coalesce(bool_or(is_allowed) filter (where purpose = 'marketing_sms'), false) as is_marketing_sms_allowed,
        coalesce(bool_or(is_allowed) filter (where purpose = 'marketing_push'), false) as is_marketing_push_allowed,
        coalesce(bool_or(is_allowed) filter (where purpose = 'marketing_inapp'), false) as is_marketing_inapp_allowed,
        coalesce(bool_or(is_allowed) filter (where purpose = 'service_alerts'), true) as is_service_alerts_allowed,
        coalesce(bool_or(is_allowed) filter (where purpose = 'message_analysis'), false) as is_message_analysis_allowed,
        customers.bucket
    from customers_d as customers
    left join effective on customers.customer_id = effective.customer_id
    group by customers.customer_id, customers.bucket
)

select * from final
