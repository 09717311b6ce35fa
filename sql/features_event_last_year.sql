-- The large-expense backtest's "last year's same window" rule (pipelines/evaluation/event_backtest.py): per customer,
-- cut-off and horizon, whether a payment of the label's kind (sql/features_event_labels.sql: out of an account that
-- is a cash-position account in the series, not an own-account transfer, not part of a monthly or shorter stream,
-- at least the customer's expense threshold as of the cut-off) fell in (cutoff - last_year_days, cutoff -
-- last_year_days + horizon]. has_last_year: the customer's data starts on or before cutoff - last_year_days; the
-- rule abstains without it.
with cash_accounts as (
    select distinct account_id from primary_days
),

short_streams as (
    select distinct customer_id, stream_key
    from recurring_streams
    where direction = 'out' and cadence_days <= getvariable('short_cadence_days')
),

first_days as (
    select customer_id, min(ds) as first_day
    from day_rows
    group by all
),

last_year as (
    select cutoffs.cutoff, day_rows.customer_id,
        cast(day_rows.ds - (cutoffs.cutoff - getvariable('last_year_days')) as integer) as day
    from day_rows
    semi join cash_accounts on cash_accounts.account_id = day_rows.account_id
    join cutoffs
        on day_rows.ds > cutoffs.cutoff - getvariable('last_year_days')
        and day_rows.ds <= cutoffs.cutoff - getvariable('last_year_days') + (select max(horizon_days) from horizons)
    join event_baselines
        on event_baselines.customer_id = day_rows.customer_id and event_baselines.cutoff = cutoffs.cutoff
    left join short_streams as streams
        on streams.customer_id = day_rows.customer_id and streams.stream_key = day_rows.stream_key
    where day_rows.sign < 0 and not day_rows.is_own_transfer and streams.stream_key is null
        and day_rows.max_neg_amount >= event_baselines.expense_threshold
),

final as (
    select
        event_baselines.customer_id,
        event_baselines.cutoff,
        horizons.horizon_days,
        coalesce(first_days.first_day <= event_baselines.cutoff - getvariable('last_year_days'), false)
            as has_last_year,
        count(last_year.day) filter (where last_year.day <= horizons.horizon_days) > 0 as large_last_year
    from event_baselines
    cross join horizons
    left join first_days on first_days.customer_id = event_baselines.customer_id
    left join last_year
        on last_year.customer_id = event_baselines.customer_id and last_year.cutoff = event_baselines.cutoff
    group by all
)

select * from final
