-- End-of-day balances of this load: core balances, and for consented open-banking accounts one balance per
-- account and day (booked before available, closing before interim, the latest of the day).
-- Rejected (quarantined): unknown account, a core balance on an open-banking account, a second core balance for an
-- account and day, an open-banking balance on an account held by another customer or whose claim was quarantined (an
-- envelope speaks only for its own customer), a currency other than the base one without an FX rate on D.
-- Skipped (counted): open-banking balances without consent on D or dated after D, and the ones a later balance of
-- the same day replaces.
with core as (
    select account_id, 'core' as source, as_of, balance, cast(null as varchar) as currency,
        source_file, source_line
    from bronze_balances
),

open_banking_judged as (
    select
        ob.account_id, 'openbanking' as source, cast(ob.balance_at as date) as as_of,
        cast(ob.amount as decimal(18, 2)) as balance, ob.currency, ob.source_file, cast(null as bigint) as source_line,
        ob.balance_type, ob.balance_at, ob.fetched_at,
        case
            when accounts.customer_id is not null and accounts.customer_id <> ob.customer_id
                then 'open-banking account held by another customer: this envelope cannot post to it'
            when accounts.customer_id is null and coalesce(consent.is_open_banking_allowed, false)
                then 'open-banking account not attributed on D: its claim was quarantined'
        end as early_reject,
        case
            when accounts.customer_id is null and not coalesce(consent.is_open_banking_allowed, false)
                then 'open banking: account not held with consent on D'
            when cast(ob.balance_at as date) > getvariable('as_of') then 'open banking: balance dated after D'
        end as early_skip
    from bronze_ob_balances as ob
    left join accounts_d as accounts on ob.account_id = accounts.account_id
    left join consent_state_d as consent on consent.customer_id = ob.customer_id
),

open_banking_ranked as (
    select
        * exclude (balance_type, balance_at, fetched_at),
        row_number() over (
            partition by account_id, as_of
            order by
                case balance_type
                    when 'ClosingBooked' then 1 when 'InterimBooked' then 2 when 'Expected' then 3
                    when 'ClosingAvailable' then 4 when 'InterimAvailable' then 5 when 'OpeningBooked' then 6
                    else 9
                end,
                balance_at desc, fetched_at desc
        ) as n_rank
    from open_banking_judged
    where early_reject is null and early_skip is null
),

delivered as (
    select * from core
    union all by name
    select * exclude (n_rank) from open_banking_ranked where n_rank = 1
),

repeated_days as (
    select account_id, as_of
    from delivered
    group by account_id, as_of
    having count(*) > 1
),

-- Only the account-days delivered more than once are ranked (a hash aggregate finds them; a window over all is slow).
numbered as (
    select
        delivered.*,
        row_number() over (partition by account_id, as_of order by source_file desc, source_line desc) as n_delivery
    from delivered
    semi join repeated_days using (account_id, as_of)
    union all by name
    select
        delivered.*,
        1 as n_delivery
    from delivered
    anti join repeated_days using (account_id, as_of)
    union all by name
    select
        * exclude (balance_type, balance_at, fetched_at),
        1 as n_delivery
    from open_banking_judged
    where early_reject is not null or early_skip is not null
),

verdicts as (
    select
        numbered.*,
        accounts.customer_id,
        accounts.bucket,
        coalesce(numbered.currency, accounts.currency) as balance_currency,
        case
            when numbered.early_reject is not null then numbered.early_reject
            when numbered.source = 'core' and accounts.customer_id is null then 'unknown account_id'
            when numbered.source = 'core' and accounts.source = 'openbanking'
                then 'core posting or balance on an open-banking account'
            when numbered.source = 'core' and numbered.n_delivery > 1
                then 'duplicate balance for this account and date within this load (the last one is used)'
            when numbered.early_skip is not null or numbered.n_delivery > 1 then null
            when coalesce(numbered.currency, accounts.currency) <> getvariable('base_currency') and rates.currency is null
                then 'no FX rate for ' || coalesce(numbered.currency, accounts.currency) || ' on '
                    || cast(getvariable('as_of') as varchar)
        end as reject_reason
    from numbered
    left join accounts_d as accounts on numbered.account_id = accounts.account_id
    left join fx_rates_d as rates on coalesce(numbered.currency, accounts.currency) = rates.currency
),

final as (
    select
        account_id,
        customer_id,
        source,
        as_of,
        balance,
        balance_currency as currency,
        getvariable('load_date') as load_date,
        bucket,
        source_file,
        source_line,
        reject_reason,
        case when reject_reason like 'no FX rate%' then 'currency' else 'account_id' end as reject_column,
        case when reject_reason like 'no FX rate%' then balance_currency else account_id end as reject_value,
        case
            when reject_reason is not null then null
            when early_skip is not null then early_skip
            when source = 'openbanking' and n_delivery > 1 then 'open banking: a later balance of the same day is used'
        end as skip_reason
    from verdicts
)

select * from final
