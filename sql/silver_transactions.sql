-- Booked postings of this load, core and open banking, in one canonical shape, with the amount in the base currency.
-- Rejected (quarantined): unknown account, a core posting on an open-banking account or with an id in the ob:
-- namespace, a core transaction_id delivered twice or already loaded; an open-banking posting on an account held by
-- another customer or whose claim was quarantined (an envelope speaks only for its own customer), or booked after D
-- and after the fetch that delivered it; a currency other than the base one without an FX rate on D.
-- Skipped (counted, not stored): open-banking rows without consent on D, pending rows, rows an earlier overlapping
-- fetch already loaded, rows booked after D by a fetch made after D (the next fetch delivers them again).
with core as (
    select
        transaction_id, account_id, 'core' as source, cast(null as varchar) as provider, booked_at, booking_date,
        amount, currency, description, merchant_name, mcc, channel, country, counterparty_id,
        'booked' as status, cast(null as varchar) as envelope_customer_id, cast(null as timestamptz) as fetched_at,
        source_file, source_line
    from bronze_transactions
),

open_banking as (
    select
        transaction_id, account_id, 'openbanking' as source, provider, booked_at, booking_date,
        cast(amount as decimal(18, 2)) as amount, currency, description, merchant_name, mcc,
        case
            when mcc is not null then 'card'
            when lower(coalesce(proprietary_code, '') || ' ' || coalesce(bank_transaction_code, '')) like '%direct%debit%'
                then 'direct_debit'
            when lower(coalesce(proprietary_code, '') || ' ' || coalesce(bank_transaction_code, '')) like '%standing%order%'
                then 'standing_order'
            when cast(amount as decimal(18, 2)) >= 0 then 'transfer_in'
            else 'transfer_out'
        end as channel,
        cast(null as varchar) as country, cast(null as varchar) as counterparty_id,
        status, customer_id as envelope_customer_id, cast(fetched_at as timestamptz) as fetched_at,
        source_file, cast(null as bigint) as source_line
    from bronze_ob_transactions
),

delivered as (
    select * from core
    union all by name
    select * from open_banking
),

-- Who holds the account on D, and the verdicts that do not depend on the other deliveries of the same id.
judged as (
    select
        delivered.*,
        accounts.customer_id,
        accounts.bucket,
        accounts.source as account_source,
        coalesce(consent.is_open_banking_allowed, false) as has_open_banking_consent,
        case
            when delivered.source = 'core' and accounts.customer_id is null then 'unknown account_id'
            when delivered.source = 'core' and accounts.source = 'openbanking'
                then 'core posting or balance on an open-banking account'
            when delivered.source = 'core' and delivered.transaction_id like 'ob:%'
                then 'transaction_id in the open-banking namespace ob: (reserved for external postings)'
            when delivered.source = 'core' or delivered.status <> 'booked' then null
            when accounts.customer_id is not null and accounts.customer_id <> delivered.envelope_customer_id
                then 'open-banking account held by another customer: this envelope cannot post to it'
            when accounts.customer_id is null and coalesce(consent.is_open_banking_allowed, false)
                then 'open-banking account not attributed on D: its claim was quarantined'
            when accounts.customer_id is null then null
            when delivered.booking_date > getvariable('as_of') and delivered.booked_at > delivered.fetched_at
                then 'open banking: booked after D and after the fetch that delivered it'
        end as early_reject,
        case
            when delivered.source = 'core' then null
            when delivered.status <> 'booked' then 'open banking: not booked (' || delivered.status || ')'
            when accounts.customer_id is null and not coalesce(consent.is_open_banking_allowed, false)
                then 'open banking: account not held with consent on D'
            when not coalesce(consent.is_open_banking_allowed, false) then 'open banking: no open_banking consent on D'
            when delivered.booking_date > getvariable('as_of')
                then 'open banking: booked after D (a later fetch delivers it)'
        end as early_skip
    from delivered
    left join accounts_d as accounts on delivered.account_id = accounts.account_id
    left join consent_state_d as consent
        on consent.customer_id = coalesce(delivered.envelope_customer_id, accounts.customer_id)
),

-- Deliveries that compete for an id: every core one (as before), open-banking ones only when attributed, on D and
-- consented, so that a delivery another customer's envelope made can never out-rank the holder's own.
rankable as (
    select *
    from judged
    where source = 'core' or (early_reject is null and early_skip is null)
),

repeated_ids as (
    select transaction_id
    from rankable
    group by transaction_id
    having count(*) > 1
),

-- Only the ids delivered more than once are ranked: a hash aggregate finds them, far cheaper than a window over all.
numbered as (
    select
        rankable.*,
        row_number() over (partition by transaction_id order by source_file, source_line) as n_delivery
    from rankable
    semi join repeated_ids using (transaction_id)
    union all by name
    select rankable.*, 1 as n_delivery
    from rankable
    anti join repeated_ids using (transaction_id)
    union all by name
    select judged.*, 1 as n_delivery
    from judged
    where not (source = 'core' or (early_reject is null and early_skip is null))
),

with_context as (
    select
        numbered.*,
        loaded.load_date as loaded_on,
        case
            when numbered.currency = getvariable('base_currency') then numbered.amount
            else cast(round(numbered.amount * rates.rate_to_base, 2) as decimal(18, 2))
        end as amount_base
    from numbered
    left join loaded_transactions as loaded on numbered.transaction_id = loaded.transaction_id
    left join fx_rates_d as rates on numbered.currency = rates.currency
),

verdicts as (
    select
        *,
        case
            when early_reject is not null then early_reject
            when source = 'core' and n_delivery > 1 then 'duplicate transaction_id within this load'
            when source = 'core' and loaded_on is not null then 'duplicate transaction_id, already loaded on ' || loaded_on
            when early_skip is not null then null
            when source = 'openbanking' and (n_delivery > 1 or loaded_on is not null) then null
            when amount_base is null
                then 'no FX rate for ' || currency || ' on ' || cast(getvariable('as_of') as varchar)
        end as reject_reason
    from with_context
),

final as (
    select
        transaction_id,
        account_id,
        customer_id,
        source,
        provider,
        booked_at,
        booking_date,
        amount,
        currency,
        amount_base,
        description,
        merchant_name,
        mcc,
        channel,
        country,
        counterparty_id,
        getvariable('load_date') as load_date,
        bucket,
        source_file,
        source_line,
        reject_reason,
        case
            when reject_reason like 'no FX rate%' then 'currency'
            when reject_reason in ('unknown account_id', 'core posting or balance on an open-banking account')
                or reject_reason like 'open-banking account %' then 'account_id'
            else 'transaction_id'
        end as reject_column,
        case
            when reject_reason like 'no FX rate%' then currency
            when reject_reason in ('unknown account_id', 'core posting or balance on an open-banking account')
                or reject_reason like 'open-banking account %' then account_id
            else transaction_id
        end as reject_value,
        case
            when reject_reason is not null then null
            when early_skip is not null then early_skip
            when source = 'openbanking' and (n_delivery > 1 or loaded_on is not null)
                then 'open banking: already loaded by an overlapping fetch'
        end as skip_reason
    from verdicts
)

select * from final
