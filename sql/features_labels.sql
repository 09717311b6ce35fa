-- Outcomes after each cut-off, for training and backtests only: per horizon, whether the cash position went below
-- zero on some day of (cutoff, cutoff + horizon], the lowest end-of-day balance and the days to the first day below
-- zero. A window the data does not cover in full (the history ends, the account closed) has no label.
with windows as (
    select cutoffs.cutoff, horizons.horizon_days, daily_balance.customer_id, daily_balance.ds, daily_balance.value
    from daily_balance
    join cutoffs on daily_balance.ds > cutoffs.cutoff
    join horizons on daily_balance.ds <= cutoffs.cutoff + horizons.horizon_days
),

outcomes as (
    select
        customer_id, cutoff, horizon_days,
        count(*) as n_days,
        min(value) as min_balance,
        min(ds) filter (where value < 0) as first_shortfall_day
    from windows
    group by all
),

final as (
    select
        customer_id,
        cutoff,
        horizon_days,
        first_shortfall_day is not null as is_shortfall,
        min_balance,
        cast(first_shortfall_day - cutoff as double) as days_to_shortfall
    from outcomes
    where n_days = horizon_days
)

select * from final
