-- scheduled payments as of D: every account keeps the rows of its latest fetch (a fetch replaces the account's list),
-- for accounts held with open_banking consent on D.
with delivered as (
    select account_id, fetched_at, scheduled_payment_id, cast(execution_at as timestamptz) as execution_at, cast(amount as decimal(18, 2)) as amount, currency
    from bronze_ob_scheduled_payments
),

latest_fetch as (
    select account_id, max(fetched_at) as fetched_at
    from delivered
    group by account_id
),

fresh as (
    select delivered.*
    from delivered
    inner join latest_fetch
        on delivered.account_id = latest_fetch.account_id and delivered.fetched_at = latest_fetch.fetched_at
),

merged as (
    select * from fresh
    union all by name
    select * exclude (customer_id, provider, bucket) from prev_scheduled_payments
    where account_id not in (select account_id from fresh)
),

final as (
    select
        merged.* exclude (fetched_at),
        accounts.customer_id,
        accounts.provider,
        merged.fetched_at,
        accounts.bucket
    from merged
    inner join accounts_d as accounts on merged.account_id = accounts.account_id
)

select * from final
