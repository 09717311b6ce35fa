-- End-of-day balances of this load: core balances, and for consented open-banking accounts one balance per
-- account and day (booked before available, closing before interim, the latest of the day).
with core as (
    select account_id, 'core' as source, as_of, balance, cast(null as varchar) as currency,
        source_file, source_line
    from bronze_balances
),

open_banking_ranked as (
    select
        account_id, 'openbanking' as source, cast(balance_at as date) as as_of,
        cast(amount as decimal(18, 2)) as balance, currency, source_file, cast(null as bigint) as source_line,
        row_number() over (
            partition by account_id, cast(balance_at as date)
            order by
                case balance_type
                    when 'ClosingBooked' then 1 when 'InterimBooked' then 2 when 'Expected' then 3
                    when 'ClosingAvailable' then 4 when 'InterimAvailable' then 5 when 'OpeningBooked' then 6
                    else 9
                end,
                balance_at desc, fetched_at desc
        ) as n_rank
    from bronze_ob_balances
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
),

final as (
    select
        numbered.account_id,
        accounts.customer_id,
        numbered.source,
        numbered.as_of,
        numbered.balance,
        coalesce(numbered.currency, accounts.currency) as currency,
        getvariable('load_date') as load_date,
        accounts.bucket,
        numbered.source_file,
        numbered.source_line,
        case
            when numbered.source = 'core' and accounts.customer_id is null then 'unknown account_id'
            when numbered.source = 'core' and numbered.n_delivery > 1
                then 'duplicate balance for this account and date within this load (the last one is used)'
        end as reject_reason,
        'account_id' as reject_column,
        numbered.account_id as reject_value,
        case
            when numbered.source = 'openbanking' and accounts.customer_id is null
                then 'open banking: account not held with consent on D'
            when numbered.source = 'openbanking' and numbered.n_delivery > 1
                then 'open banking: a later balance of the same day is used'
        end as skip_reason
    from numbered
    left join accounts_d as accounts on numbered.account_id = accounts.account_id
)

select * from final
