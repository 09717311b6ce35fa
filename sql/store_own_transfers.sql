-- Own-account transfers (config/forecast.yaml `own_transfers`, docs/forecasting.md): the postings of
-- `transfer_candidates` (postings on a transfer-like channel) that move money between two of the customer's own
-- accounts:
-- - the counterparty is another of the customer's accounts (core, or open banking with consent), or
-- - an opposite posting of the same amount on another of the customer's accounts within `pair_window_days`, or
-- - the description names an own-account transfer (for an account the bank cannot see).
-- A payment out of a current or savings account to the customer's own loan, mortgage or credit card is a repayment
-- (a commitment, like a bill), not an own transfer; the credit on the lending account is one.
-- Reads: transfer_candidates(transaction_id, account_id, customer_id, ds, amount, counterparty_id,
-- is_own_description), accounts_in; variables pair_window_days, lending_products.
with by_counterparty as (
    select c.transaction_id, c.account_id, c.amount, other.product as other_product
    from transfer_candidates as c
    join accounts_in as other
        on other.account_id = c.counterparty_id and other.customer_id = c.customer_id
        and other.account_id <> c.account_id
),

by_pair as (
    select c.transaction_id, c.account_id, c.amount,
        arg_min(other.product, abs(o.ds - c.ds)) as other_product
    from transfer_candidates as c
    join transfer_candidates as o
        on o.customer_id = c.customer_id and o.account_id <> c.account_id
        and o.amount = -c.amount and c.amount <> 0
        and o.ds between c.ds - getvariable('pair_window_days') and c.ds + getvariable('pair_window_days')
    left join accounts_in as other on other.account_id = o.account_id
    group by all
),

by_description as (
    select c.transaction_id, c.account_id, c.amount, cast(null as varchar) as other_product
    from transfer_candidates as c
    where c.is_own_description
),

matched as (
    select * from by_counterparty
    union all select * from by_pair
    union all select * from by_description
),

classified as (
    -- a payment out of a deposit account into the customer's own lending account is a repayment
    select matched.account_id, matched.transaction_id,
        matched.amount < 0 and not list_contains(getvariable('lending_products'), coalesce(mine.product, ''))
            and list_contains(getvariable('lending_products'), coalesce(matched.other_product, '')) as is_repayment
    from matched
    left join accounts_in as mine on mine.account_id = matched.account_id
),

final as (
    select account_id, transaction_id
    from classified
    group by all
    having not bool_or(is_repayment)
)

select * from final
