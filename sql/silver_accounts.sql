-- Accounts as of D: core upserts over the previous snapshot, plus open-banking accounts of customers whose
-- open_banking consent holds on D (a withdrawal drops them on the next run). Unknown owners are rejected.
-- Open-banking attribution (docs/architecture.md, "Conform"): an envelope speaks only for its own customer. An
-- external account held in the previous snapshot stays with its holder: another customer's claim is rejected, never
-- re-assigned. A new external account listed by two customers' envelopes in one load is rejected for both (joint
-- accounts are not modelled). Core account ids may not use the open-banking namespace `ob:`.
with previous as (
    select account_id, customer_id, source, provider, product, currency, opened_on, closed_on,
        overdraft_limit, credit_limit, updated_load_date
    from prev_accounts
),

core_delivered as (
    select
        account_id, customer_id, 'core' as source, cast(null as varchar) as provider, product, currency,
        opened_on, closed_on, overdraft_limit, credit_limit, source_file, source_line,
        case when account_id like 'ob:%' then 'account_id in the open-banking namespace ob: (reserved for '
            || 'external accounts): not a core account' end as claim_reason
    from bronze_accounts
    qualify row_number() over (partition by account_id order by source_file desc, source_line desc) = 1
),

-- one claim per customer and account: the customer's latest fetch
open_banking_claims as (
    select
        account_id, customer_id, 'openbanking' as source, provider, product, currency,
        cast(opening_date as date) as opened_on, cast(null as date) as closed_on,
        cast(null as decimal(18, 2)) as overdraft_limit, cast(null as decimal(18, 2)) as credit_limit,
        source_file, cast(null as bigint) as source_line
    from bronze_ob_accounts
    qualify row_number() over (partition by account_id, customer_id order by fetched_at desc, source_file desc) = 1
),

claimants as (
    select account_id, count(*) as n_claimants
    from open_banking_claims
    group by account_id
),

open_banking_delivered as (
    select
        claims.*,
        case
            when held.account_id is not null and held.customer_id <> claims.customer_id
                then 'open-banking account held by another customer: the claim is not re-assigned'
            when held.account_id is null and claimants.n_claimants > 1
                then 'open-banking account listed by ' || claimants.n_claimants || ' customers'' envelopes in one '
                    || 'load: attributed to none (joint accounts are not modelled)'
        end as claim_reason
    from open_banking_claims as claims
    inner join claimants using (account_id)
    left join previous as held on claims.account_id = held.account_id and held.source = 'openbanking'
),

delivered as (
    select *, getvariable('load_date') as updated_load_date from core_delivered
    union all by name
    select *, getvariable('load_date') as updated_load_date from open_banking_delivered
),

merged as (
    select * from delivered
    union all by name
    select *, cast(null as varchar) as source_file, cast(null as bigint) as source_line,
        cast(null as varchar) as claim_reason
    from previous
    where account_id not in (select account_id from delivered where claim_reason is null)
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
        case
            when merged.claim_reason is not null then merged.claim_reason
            when customers.customer_id is null then 'unknown customer_id'
        end as reject_reason,
        case when merged.claim_reason is not null then 'account_id' else 'customer_id' end as reject_column,
        case when merged.claim_reason is not null then merged.account_id else merged.customer_id end as reject_value,
        case
            when merged.claim_reason is null and customers.customer_id is not null and merged.source = 'openbanking'
                and not coalesce(consent.is_open_banking_allowed, false)
                then 'no open_banking consent on D'
        end as skip_reason
    from merged
    left join customers_d as customers on merged.customer_id = customers.customer_id
    left join consent_state_d as consent on merged.customer_id = consent.customer_id
)

select * from final
