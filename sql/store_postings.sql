-- Every posting of `postings_in` as the feature store keeps it (docs/feature_store.md): the amount in the base
-- currency and the facts the features read, derived once when the posting arrives: the spending category of its
-- MCC, its stream key (a counterparty: id, else merchant, else the description with digits masked), whether it is a
-- recurring-stream candidate, an own-account transfer (own_transfers, sql/store_own_transfers.sql), arrears evidence,
-- its life-event signal groups, and the kind of income or regular payment it is.
-- Reads: postings_in (pipelines/store.register_postings), own_transfers(transaction_id),
-- mcc_facts(mcc, category, signals, is_forbidden, is_subscription), life_event_keywords(signal, pattern, is_inflow);
-- variables own_transfer_channels, own_description_pattern, life_event_keywords, any_keyword_pattern, returned_payment_pattern, arrears_fee_pattern.
with texts as (
    select
        p.*,
        upper(concat_ws(' ', p.description, p.merchant_name)) as posting_text,
        p.channel || ' ' || upper(coalesce(p.description, '')) as arrears_text,
        regexp_matches(upper(coalesce(p.description, '')), getvariable('own_description_pattern')) as is_own_description
    from postings_in as p
),

classified as (
    select
        t.customer_id,
        t.account_id,
        t.source,
        t.booking_date as ds,
        t.transaction_id,
        t.counterparty_id,
        t.channel,
        coalesce(m.category, 'other') as category,
        cast(sign(t.amount_value) as tinyint) as sign,
        t.country,
        t.currency,
        t.amount_value as amount,
        coalesce(t.counterparty_id, upper(t.merchant_name),
                 regexp_replace(upper(coalesce(t.description, '')), '[0-9]+', '#', 'g')) as stream_key,
        -- card spending only at subscription-like merchants; a direct debit coming back (a payment returned unpaid,
        -- a refund, an indemnity claim) is never an income stream
        (t.channel not in ('card', 'atm', 'fee') or coalesce(m.is_subscription, false))
            and not (t.channel = 'direct_debit' and t.amount_value > 0) as is_stream_candidate,
        own.transaction_id is not null as is_own_transfer,
        list_contains(getvariable('own_transfer_channels'), t.channel) as is_own_channel,
        coalesce(m.is_forbidden, false) as is_forbidden,
        -- life-event signal groups: money out at a signal MCC, or a text naming the group (income groups on money
        -- in only, the others on money out only); each group once per posting
        list_sort(list_distinct(list_concat(
            case when t.amount_value < 0 then coalesce(m.signals, []) else [] end,
            case when regexp_matches(t.posting_text, getvariable('any_keyword_pattern'))
                then list_transform(
                    list_filter(getvariable('life_event_keywords'),
                                lambda k: k.is_inflow = (t.amount_value > 0)
                                          and regexp_matches(t.posting_text, k.pattern)),
                    lambda k: k.signal)
                else [] end
        ))) as signals,
        case when t.amount_value > 0 and (t.channel in ('salary', 'benefit') or t.posting_text like '%PENSION%') then
            case when t.posting_text like '%PENSION%' then 'pension'
                 when t.channel = 'salary' then 'salary'
                 else 'benefit' end
        end as income_kind,
        case when t.amount_value < 0 and t.channel in ('direct_debit', 'standing_order') then
            case when t.mcc = '6012' or t.posting_text like '%MORTGAGE%' then 'mortgage'
                 when t.mcc in ('4900', '4814', '4899') then 'utilities'
                 when t.mcc = '9311' or t.posting_text like '%COUNCIL TAX%' then 'council_tax'
                 when t.mcc = '8351' then 'nursery'
                 when t.channel = 'standing_order' and t.posting_text like '%RENT%' then 'rent'
                 else 'other' end
        end as outflow_kind,
        t.is_own_description,
        t.posting_text like '%TRANSFER TO %' or t.posting_text like '%TRANSFER FROM %' as is_transfer_text,
        t.posting_text like '%SAVING%' as is_saving_text,
        regexp_matches(t.arrears_text, getvariable('returned_payment_pattern')) as is_returned_payment,
        regexp_matches(t.arrears_text, getvariable('arrears_fee_pattern')) as is_arrears_fee
    from texts as t
    left join mcc_facts as m on m.mcc = t.mcc
    left join own_transfers as own on own.transaction_id = t.transaction_id
),

final as (
    select
        *,
        -- kept posting by posting for 400 days (stream_days): what recurring streams, own-account transfers and
        -- the life-event income and payment streams read; the rest day by day for 180 days (flow_days)
        is_stream_candidate or is_own_channel or income_kind is not null or outflow_kind is not null as is_stream_row
    from classified
)

select * from final
