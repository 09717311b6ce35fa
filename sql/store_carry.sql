-- Per account, the balance carried into the series window (sql/features_account_days.sql) that starts on
-- `series_start`: when a balance was reported before it, the last one (in the account's own currency, converted
-- when read) and the postings after it; otherwise the sum of every posting before the window. Computed from the
-- days before the window: a rebuild reads every day; the nightly update reads the days that left the window and
-- the previous carry as rows (pipelines/store.py), which gives the same.
-- Reads: carry_flows(customer_id, account_id, source, ds, amount), carry_balances(customer_id, account_id, source,
-- ds, currency, balance); variable series_start.
with flows as (
    select customer_id, account_id, source, ds, sum(amount) as amount
    from carry_flows
    where ds < getvariable('series_start')
    group by all
),

reports as (
    select customer_id, account_id, source, max(ds) as reported_day,
        arg_max(balance, ds) as reported, arg_max(currency, ds) as currency
    from (
        select customer_id, account_id, source, ds, max(balance) as balance, max(currency) as currency
        from carry_balances
        where ds < getvariable('series_start')
        group by all
    )
    group by all
),

accounts as (
    select customer_id, account_id, source from flows
    union
    select customer_id, account_id, source from reports
),

final as (
    select
        accounts.customer_id,
        accounts.account_id,
        accounts.source,
        reports.reported_day as carry_reported_day,
        reports.reported as carry_reported,
        reports.currency as carry_currency,
        cast(coalesce(sum(flows.amount) filter (
            where reports.reported_day is null or flows.ds > reports.reported_day), 0) as decimal(18, 2)) as carry_flow
    from accounts
    left join reports using (customer_id, account_id, source)
    left join flows using (customer_id, account_id, source)
    group by all
)

select * from final
