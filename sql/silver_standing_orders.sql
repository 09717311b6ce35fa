-- standing orders as of D: every account keeps the rows of its latest fetch (a fetch replaces the account's list),
-- for accounts held with open_banking consent on D. An envelope speaks only for its own customer: rows on an account
-- held by another customer, or whose claim was quarantined, are rejected; rows on accounts not held for lack of
-- consent are skipped (counted).
with delivered as (
    select account_id, customer_id as envelope_customer_id, fetched_at, standing_order_id, frequency, cast(next_payment_at as timestamptz) as next_payment_at, cast(next_payment_amount as decimal(18, 2)) as next_payment_amount, cast(final_payment_at as timestamptz) as final_payment_at, currency, status, creditor_name,
        source_file
    from bronze_ob_standing_orders
),

judged as (
    select
        delivered.*,
        case
            when accounts.customer_id is not null and accounts.customer_id <> delivered.envelope_customer_id
                then 'open-banking account held by another customer: this envelope cannot post to it'
            when accounts.customer_id is null and coalesce(consent.is_open_banking_allowed, false)
                then 'open-banking account not attributed on D: its claim was quarantined'
        end as reject_reason,
        case
            when accounts.customer_id is null and not coalesce(consent.is_open_banking_allowed, false)
                then 'open banking: account not held with consent on D'
        end as skip_reason
    from delivered
    left join accounts_d as accounts on delivered.account_id = accounts.account_id
    left join consent_state_d as consent on consent.customer_id = delivered.envelope_customer_id
),

attributed as (
    select * exclude (envelope_customer_id, reject_reason, skip_reason)
    from judged
    where reject_reason is null and skip_reason is null
),

latest_fetch as (
    select account_id, max(fetched_at) as fetched_at
    from attributed
    group by account_id
),

fresh as (
    select attributed.*
    from attributed
    inner join latest_fetch
        on attributed.account_id = latest_fetch.account_id and attributed.fetched_at = latest_fetch.fetched_at
),

merged as (
    select *, cast(null as varchar) as previous_customer_id from fresh
    union all by name
    select * exclude (customer_id, provider, bucket), customer_id as previous_customer_id,
        cast(null as varchar) as source_file
    from prev_standing_orders
    where account_id not in (select account_id from fresh)
),

-- a row of an earlier snapshot stays only while the same customer holds its account
kept as (
    select
        merged.* exclude (fetched_at, previous_customer_id),
        accounts.customer_id,
        accounts.provider,
        merged.fetched_at,
        accounts.bucket
    from merged
    inner join accounts_d as accounts on merged.account_id = accounts.account_id
    where merged.previous_customer_id is null or merged.previous_customer_id = accounts.customer_id
),

final as (
    select
        *,
        cast(null as bigint) as source_line,
        cast(null as varchar) as reject_reason,
        'account_id' as reject_column,
        account_id as reject_value,
        cast(null as varchar) as skip_reason
    from kept
    union all by name
    select
        * exclude (envelope_customer_id),
        envelope_customer_id as customer_id,
        cast(null as varchar) as provider,
        cast(null as integer) as bucket,
        cast(null as bigint) as source_line,
        'account_id' as reject_column,
        account_id as reject_value
    from judged
    where reject_reason is not null or skip_reason is not null
)

select * from final
