-- The store's daily rows (docs/feature_store.md) from enriched postings (sql/store_postings.sql): one row per
-- account, day and set of facts the features read, with the number of postings, their sum and the largest amount
-- out. A posting on an own-account-transfer channel stays a row of its own (its id, amount and counterparty), so
-- that a posting arriving later can be paired with it. is_stream_row says which table keeps the row: stream_days
-- (400 days) or flow_days (180 days).
-- Reads: enriched_postings.
with rows_out as (
    select
        customer_id,
        account_id,
        source,
        ds,
        case when is_own_channel then transaction_id end as transaction_id,
        case when is_own_channel then counterparty_id end as counterparty_id,
        case when is_own_channel then is_own_description else false end as is_own_description,
        channel,
        category,
        sign,
        country,
        currency,
        case when is_stream_row then stream_key end as stream_key,
        is_stream_candidate,
        is_own_transfer,
        is_own_channel,
        is_forbidden,
        signals,
        income_kind,
        outflow_kind,
        is_transfer_text,
        is_saving_text,
        is_returned_payment,
        is_arrears_fee,
        is_stream_row,
        amount
    from enriched_postings
),

final as (
    select
        customer_id, account_id, source, ds, transaction_id, counterparty_id, is_own_description, channel, category,
        sign, country, currency, stream_key, is_stream_candidate, is_own_transfer, is_own_channel, is_forbidden,
        signals, income_kind, outflow_kind, is_transfer_text, is_saving_text, is_returned_payment, is_arrears_fee,
        is_stream_row,
        cast(count(*) as integer) as n,
        cast(sum(amount) as decimal(18, 2)) as amount,
        cast(max(-amount) as decimal(18, 2)) as max_neg_amount
    from rows_out
    group by all
)

select * from final
