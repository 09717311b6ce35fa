-- Accounts as of D: core upserts over the previous snapshot, plus open-banking accounts of customers whose
-- open_banking consent holds on D (a withdrawal drops them on the next run). Unknown owners are rejected.
with previous as (
    select account_id, customer_id, source, provider, product, currency, opened_on, closed_on,
        overdraft_limit, credit_limit, updated_load_date
    from prev_accounts
),

core_delivered as (
    select
        account_id, customer_id, 'core' as source, cast(null as varchar) as provider, product, currency,
        opened_on, closed_on, overdraft_limit, credit_limit, source_file, source_line
    from bronze_accounts
    qualify row_number() over (partition by account_id order by source_file desc, source_line desc) = 1
),

open_banking_delivered as (
    select
        account_id, customer_id, 'openbanking' as source, provider, product, currency,
        cast(opening_date as date) as opened_on, cast(null as date) as closed_on,
        cast(null as decimal(18, 2)) as overdraft_limit, cast(null as decimal(18, 2)) as credit_limit,
        source_file, cast(null as bigint) as source_line
    from bronze_ob_accounts
    qualify row_number() over (partition by account_id order by fetched_at desc, source_file desc) = 1
),

delivered as (
    select *, getvariable('load_date') as updated_load_date from core_delivered
    union all by name
    select *, getvariable('load_date') as updated_load_date from open_banking_delivered
),

merged as (
    select * from delivered
    union all by name
    select *, cast(null as varchar) as source_file, cast(null as bigint) as source_line from previous
    where account_id not in (select account_id from delivered)
),

final as (
    select
        merged.account_id,
        merged.customer_id,
        merged.source,
        merged.provider,
        merged.product,
        merged.currency,
        merged.opened_on,
        merged.closed_on,
        merged.overdraft_limit,
        merged.credit_limit,
        merged.closed_on is null or merged.closed_on > getvariable('as_of') as is_open,
        customers.bucket,
        merged.updated_load_date,
        merged.source_file,
        merged.source_line,
        case when customers.customer_id is null then 'unknown customer_id' end as reject_reason,
        'customer_id' as reject_column,
        merged.customer_id as reject_value,
        case
            when merged.source = 'openbanking' and not coalesce(consent.is_open_banking_allowed, false)
                then 'no open_banking consent on D'
        end as skip_reason
    from merged
    left join customers_d as customers on merged.customer_id = customers.customer_id
    left join consent_state_d as consent on merged.customer_id = consent.customer_id
)

select * from final
