-- Outcomes of the income-drop and large-expense forecasts after each cut-off (training and backtests only;
-- docs/forecasting.md, "Income drops and large expenses"). Reads the same views as features_labels.sql (day_rows,
-- primary_days, cutoffs, horizons, daily_balance, recurring_streams as of each cut-off) and event_baselines
-- (customer_id, cutoff, income_baseline, expense_threshold: pipelines/event_forecast.baselines). Per customer,
-- cut-off and horizon:
-- - income: the customer's income in the trailing `income_window_days` (W) falls below (1 - income_drop_share) x
--   their usual income on some day of (cutoff, cutoff + horizon]; the first such day. The usual income is the
--   smaller of the two windows of W days before the latest (income.usual 'smallest') or the median of the three
--   ('median') of the windows of W days before the cut-off (a monthly pay, or five weekly ones, in each). Income is counted as the features count income_90: credits on the cash-position accounts that are not
--   own-account transfers, from an income stream as of the cut-off or on a salary or benefit channel. Only
--   customers the stage forecasts for (income_baseline > 0), with 3 W days of history, a usual income, and an
--   income not already fallen on the cut-off (the window ending on it at or above the line).
-- - expense: a single payment out of the cash-position accounts, not an own-account transfer nor part of a stream
--   of `short_cadence_days` or shorter at any cut-off (rent, bills, subscriptions), of at least
--   expense_threshold, in (cutoff, cutoff + horizon]; the first day and the largest such payment.
-- A window the data does not cover in full has no label.
with coverage as (
    select cutoffs.cutoff, horizons.horizon_days, daily_balance.customer_id, count(*) as n_days
    from daily_balance
    join cutoffs on daily_balance.ds > cutoffs.cutoff
    join horizons on daily_balance.ds <= cutoffs.cutoff + horizons.horizon_days
    group by all
),

covered as (
    select coverage.*, event_baselines.expense_threshold
    from coverage
    join event_baselines
        on event_baselines.customer_id = coverage.customer_id and event_baselines.cutoff = coverage.cutoff
    where coverage.n_days = coverage.horizon_days
),

income_days as (
    select cutoffs.cutoff, day_rows.customer_id, cast(day_rows.ds - cutoffs.cutoff as integer) as day, sum(day_rows.amount) as income
    from day_rows
    semi join primary_days
        on primary_days.account_id = day_rows.account_id and primary_days.ds = day_rows.ds
    join cutoffs
        on day_rows.ds > cutoffs.cutoff - 3 * getvariable('income_window_days')
        and day_rows.ds <= cutoffs.cutoff + (select max(horizon_days) from horizons)
    left join recurring_streams as streams
        on streams.cutoff = cutoffs.cutoff
        and streams.customer_id = day_rows.customer_id
        and streams.stream_key = day_rows.stream_key
        and streams.direction = 'in'
    where day_rows.sign > 0 and not day_rows.is_own_transfer
        and (streams.direction is not null or day_rows.channel in ('salary', 'benefit'))
    group by all
),

usual_income as (
    -- the income of the three trailing windows before the cut-off; the usual one is their median
    select event_baselines.customer_id, event_baselines.cutoff,
        coalesce(sum(income_days.income) filter (where income_days.day > -w), 0) as w0,
        coalesce(sum(income_days.income) filter (where income_days.day <= -w and income_days.day > -2 * w), 0) as w1,
        coalesce(sum(income_days.income) filter (where income_days.day <= -2 * w), 0) as w2
    from event_baselines
    cross join (select getvariable('income_window_days') as w) as window_length
    left join income_days
        on income_days.customer_id = event_baselines.customer_id and income_days.cutoff = event_baselines.cutoff
        and income_days.day <= 0
    where event_baselines.income_baseline > 0
        and event_baselines.history_days >= 3 * getvariable('income_window_days')
    group by all
),

usual_of as (
    -- the usual income (config/event_forecast.yaml income.usual): 'smallest', the smaller of the two windows
    -- before the latest (what both brought: a window holding two monthly pays, or a bonus, does not raise it, and
    -- the latest window is still compared with it: an income already fallen has no label); 'median', the median of
    -- the three (as before 2026-12-07)
    select customer_id, cutoff, w0,
        case when getvariable('income_usual_smallest') then least(w1, w2)
             else w0 + w1 + w2 - greatest(w0, w1, w2) - least(w0, w1, w2) end as usual
    from usual_income
),

income_baseline as (
    -- customers with a usual income whose income has not already fallen on the cut-off
    select customer_id, cutoff, usual
    from usual_of
    where usual > 0 and w0 >= (1 - getvariable('income_drop_share')) * usual
),

grid as (
    -- every day of (cutoff, cutoff + longest horizon] of a customer with a usual income
    select income_baseline.customer_id, income_baseline.cutoff, income_baseline.usual, days.day
    from income_baseline
    cross join (select unnest(range(1, (select max(horizon_days) from horizons) + 1)) as day) as days
),

window_income as (
    -- income in the trailing window ending on each day of the grid
    select grid.customer_id, grid.cutoff, grid.day, grid.usual,
        coalesce(sum(income_days.income), 0) as trailing_income
    from grid
    left join income_days
        on income_days.customer_id = grid.customer_id and income_days.cutoff = grid.cutoff
        and income_days.day > grid.day - getvariable('income_window_days') and income_days.day <= grid.day
    group by all
),

income_first as (
    select customer_id, cutoff, min(day) as first_day
    from window_income
    where trailing_income < (1 - getvariable('income_drop_share')) * usual
    group by all
),

short_streams as (
    -- payments seen as a monthly (or shorter) stream at any cut-off: a rent paid once before an early cut-off is
    -- no one-off expense (the label is hindsight; no feature reads it)
    select distinct customer_id, stream_key
    from recurring_streams
    where direction = 'out' and cadence_days <= getvariable('short_cadence_days')
),

large_payments as (
    select cutoffs.cutoff, day_rows.customer_id, cast(day_rows.ds - cutoffs.cutoff as integer) as day,
        max(day_rows.max_neg_amount) as amount
    from day_rows
    semi join primary_days
        on primary_days.account_id = day_rows.account_id and primary_days.ds = day_rows.ds
    join cutoffs
        on day_rows.ds > cutoffs.cutoff and day_rows.ds <= cutoffs.cutoff + (select max(horizon_days) from horizons)
    join event_baselines
        on event_baselines.customer_id = day_rows.customer_id and event_baselines.cutoff = cutoffs.cutoff
    left join short_streams as streams
        on streams.customer_id = day_rows.customer_id and streams.stream_key = day_rows.stream_key
    where day_rows.sign < 0 and not day_rows.is_own_transfer and streams.stream_key is null
        and day_rows.max_neg_amount >= event_baselines.expense_threshold
    group by all
),

final as (
    select
        covered.customer_id,
        covered.cutoff,
        covered.horizon_days,
        case when income_baseline.usual is not null
            then coalesce(income_first.first_day <= covered.horizon_days, false) end as is_income_drop,
        case when income_first.first_day <= covered.horizon_days
            then cast(income_first.first_day as double) end as days_to_income_drop,
        count(large_payments.day) > 0 as is_large_expense,
        cast(min(large_payments.day) as double) as days_to_large_expense,
        cast(max(large_payments.amount) as double) as large_expense_amount
    from covered
    left join income_baseline
        on income_baseline.customer_id = covered.customer_id and income_baseline.cutoff = covered.cutoff
    left join income_first
        on income_first.customer_id = covered.customer_id and income_first.cutoff = covered.cutoff
    left join large_payments
        on large_payments.customer_id = covered.customer_id and large_payments.cutoff = covered.cutoff
        and large_payments.day <= covered.horizon_days
    group by all
)

select * from final
