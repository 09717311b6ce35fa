-- Per account, what the features need from its whole history (all-time minima, so that merging new rows into the
-- previous state gives what a rebuild from silver gives): the first day of data (a posting or a reported
-- balance), the first reported balance, the first credit that is not interest (a repayment on a loan).
-- Reads: day_rows, balance_rows (the rows to add), previous_account_firsts (the state before them; empty for a
-- rebuild).
with parts as (
    select customer_id, account_id, source, min(ds) as first_day,
        min(ds) filter (where sign > 0 and channel <> 'interest') as first_credit_day,
        cast(null as date) as first_balance_day
    from day_rows
    group by all
    union all
    select customer_id, account_id, source, min(ds), cast(null as date), min(ds)
    from balance_rows
    group by all
    union all
    select customer_id, account_id, source, first_day, first_credit_day, first_balance_day
    from previous_account_firsts
),

final as (
    select customer_id, account_id, source, min(first_day) as first_day, min(first_credit_day) as first_credit_day,
        min(first_balance_day) as first_balance_day
    from parts
    group by all
)

select * from final
