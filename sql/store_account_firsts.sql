-- Per account, what the features need from its whole history (all-time minima, so that merging new rows into the
-- previous state gives what a rebuild from silver gives): the first day of data (a posting or a reported
-- balance), the first reported balance, the first credit that is not interest (a repayment on a loan), the first
-- credit that could be an income (on one of config/forecast.yaml income_history.income_channels, not an own-account
-- transfer: sql/features_income_history.sql).
-- Reads: day_rows, balance_rows (the rows to add), previous_account_firsts (the state before them; empty for a
-- rebuild); variable income_channels.
with parts as (
    select customer_id, account_id, source, min(ds) as first_day,
        min(ds) filter (where sign > 0 and channel <> 'interest') as first_credit_day,
        cast(null as date) as first_balance_day,
        min(ds) filter (where sign > 0 and not is_own_transfer
                        and list_contains(getvariable('income_channels'), channel)) as first_income_day
    from day_rows
    group by all
    union all
    select customer_id, account_id, source, min(ds), cast(null as date), min(ds), cast(null as date)
    from balance_rows
    group by all
    union all
    select customer_id, account_id, source, first_day, first_credit_day, first_balance_day, first_income_day
    from previous_account_firsts
),

final as (
    select customer_id, account_id, source, min(first_day) as first_day, min(first_credit_day) as first_credit_day,
        min(first_balance_day) as first_balance_day, min(first_income_day) as first_income_day
    from parts
    group by all
)

select * from final
