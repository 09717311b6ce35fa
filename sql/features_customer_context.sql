-- Per customer as of D, what decide reads besides the forecast's features: the open accounts held here by product,
-- an external current account (open banking, with that consent on D), and a credit card held here whose latest
-- balance of the last 35 days is beyond its credit limit (arrears evidence, docs/decisioning.md).
-- Reads: accounts_in, balance_rows (reported balances in the account's own currency); variable as_of.
with latest as (
    select account_id, arg_max(balance, ds) as balance
    from (
        select account_id, ds, max(balance) as balance
        from balance_rows
        where ds between getvariable('as_of') - 35 and getvariable('as_of')
        group by all
    )
    group by all
),

final as (
    select
        accounts_in.customer_id,
        bool_or(accounts_in.product = 'current' and accounts_in.source = 'core') as has_current,
        bool_or(accounts_in.product = 'savings' and accounts_in.source = 'core') as has_savings,
        bool_or(accounts_in.product = 'credit_card' and accounts_in.source = 'core') as has_credit_card,
        bool_or(accounts_in.product = 'loan' and accounts_in.source = 'core') as has_loan,
        bool_or(accounts_in.product = 'mortgage' and accounts_in.source = 'core') as has_mortgage,
        bool_or(accounts_in.product = 'current' and accounts_in.source = 'openbanking') as has_external_current,
        coalesce(bool_or(accounts_in.product = 'credit_card' and accounts_in.source = 'core'
                         and accounts_in.credit_limit > 0
                         and cast(latest.balance as double) < -cast(accounts_in.credit_limit as double)), false)
            as card_over_limit
    from accounts_in
    left join latest using (account_id)
    where accounts_in.is_open
    group by accounts_in.customer_id
)

select * from final
