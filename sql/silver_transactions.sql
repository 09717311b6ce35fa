-- Booked postings of this load, core and open banking, in one canonical shape.
-- Rejected (quarantined): unknown account, a core transaction_id delivered twice. Skipped (counted, not stored):
-- open-banking rows without consent on D, pending rows, and rows an earlier overlapping fetch already loaded.
with core as (
    select
        transaction_id, account_id, 'core' as source, cast(null as varchar) as provider, booked_at, booking_date,
        amount, currency, description, merchant_name, mcc, channel, country, counterparty_id,
        'booked' as status, source_file, source_line
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
        status, source_file, cast(null as bigint) as source_line
    from bronze_ob_transactions
),

delivered as (
    select * from core
    union all by name
    select * from open_banking
),

repeated_ids as (
    select transaction_id
    from delivered
    group by transaction_id
    having count(*) > 1
),

-- Only the ids delivered more than once are ranked: a hash aggregate finds them, far cheaper than a window over all.
numbered as (
    select
        delivered.*,
        row_number() over (partition by transaction_id order by source_file, source_line) as n_delivery
    from delivered
    semi join repeated_ids using (transaction_id)
    union all by name
    select
        delivered.*,
        1 as n_delivery
    from delivered
    anti join repeated_ids using (transaction_id)
),

with_account as (
    select
        numbered.*,
        accounts.customer_id,
        accounts.bucket,
        accounts.source as account_source,
        consent.is_open_banking_allowed,
        loaded.load_date as loaded_on,
        rates.rate_to_base
    from numbered
    left join accounts_d as accounts on numbered.account_id = accounts.account_id
    left join consent_state_d as consent on accounts.customer_id = consent.customer_id
    left join loaded_transactions as loaded on numbered.transaction_id = loaded.transaction_id
    left join fx_rates_d as rates on numbered.currency = rates.currency
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
        cast(round(amount * rate_to_base, 2) as decimal(18, 2)) as amount_base,
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
        case
            when source = 'core' and customer_id is null then 'unknown account_id'
            when source = 'core' and n_delivery > 1 then 'duplicate transaction_id within this load'
            when source = 'core' and loaded_on is not null then 'duplicate transaction_id, already loaded on ' || loaded_on
        end as reject_reason,
        case
            when source = 'core' and customer_id is null then 'account_id'
            else 'transaction_id'
        end as reject_column,
        case
            when source = 'core' and customer_id is null then account_id
            else transaction_id
        end as reject_value,
        case
            when source = 'openbanking' and status <> 'booked' then 'open banking: not booked (' || status || ')'
            when source = 'openbanking' and customer_id is null then 'open banking: account not held with consent on D'
            when source = 'openbanking' and not coalesce(is_open_banking_allowed, false)
                then 'open banking: no open_banking consent on D'
            when source = 'openbanking' and (n_delivery > 1 or loaded_on is not null)
                then 'open banking: already loaded by an overlapping fetch'
        end as skip_reason
    from with_account
)

select * from final
