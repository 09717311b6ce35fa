-- The customer's daily cash position as of the last cut-off: the sum of the end-of-day balances of the accounts
-- that make it (is_primary). What the labels and the per-customer series (Prophet) read; the features take the
-- position each cut-off saw (sql/features_customer.sql, `positions`).
-- Reads: account_days.
with by_day as (
    select customer_id, ds, sum(balance) as value, sum(net_flow) as net_flow, min(first_day) as first_day,
        bool_and(is_anchored_before or report_day is not null) as has_reported_balance
    from account_days
    where is_primary
    group by all
),

final as (
    select customer_id, ds, value, net_flow, first_day, has_reported_balance
    from by_day
)

select * from final
