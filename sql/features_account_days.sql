-- One row per current account and day from `series_start` (or the account's first day of data) to the last cut-off:
-- the end-of-day balance as reported where the bank reported one, rebuilt from the postings where it did not
-- (carried forward from the last reported balance, the one before the window included through the account's carry,
-- or back from the first one), and the reconciliation gap on reported days: reported minus (previous reported plus
-- the postings in between). A gap is a data-quality finding; the reported balance is kept as it is.
-- An account never reported before a day is rebuilt back from its first report: `balance` is the value as of the
-- last cut-off; a cut-off before `report_day` (or any cut-off, when the account was never reported) did not know the
-- account's level, and sql/features_customer.sql makes no cash position of it. `first_day` is the account's first
-- day of data.
-- The cash position is the customer's current accounts at this bank; on a day when the customer holds none here
-- (never did, or closed it after switching banks) their consented external current accounts (open banking) are the
-- cash position instead: `is_primary` marks the accounts that make the position on each day.
-- Reads: accounts_in, account_state (first_day and the carry, pipelines/store.py), day_rows, balances_in, fx_in;
-- variables series_start, last_cutoff.
with scope as (
    select
        accounts_in.account_id, accounts_in.customer_id, accounts_in.source, accounts_in.closed_on,
        account_state.first_day,
        account_state.carry_reported_day is not null as is_anchored_before,
        account_state.carry_reported * case when coalesce(account_state.carry_currency, getvariable('base_currency'))
            = getvariable('base_currency') then 1 else fx_in.rate end + account_state.carry_flow as carry_anchored,
        coalesce(account_state.carry_flow, 0) as carry_flow
    from accounts_in
    join account_state using (customer_id, account_id)
    left join fx_in on fx_in.currency = account_state.carry_currency
    where accounts_in.product = 'current' and account_state.first_day is not null
),

window_postings as (
    select day_rows.account_id, day_rows.ds, sum(day_rows.amount) as net_flow, sum(day_rows.n) as n_postings
    from day_rows
    semi join scope using (account_id)
    where day_rows.ds between getvariable('series_start') and getvariable('last_cutoff')
    group by all
),

window_reported as (
    select balances_in.account_id, balances_in.as_of as ds, balances_in.balance_value as balance
    from balances_in
    semi join scope using (account_id)
    where balances_in.as_of between getvariable('series_start') and getvariable('last_cutoff')
),

spans as (
    select scope.*,
        greatest(scope.first_day, getvariable('series_start')) as window_start,
        least(getvariable('last_cutoff'), coalesce(scope.closed_on, getvariable('last_cutoff'))) as last_day,
        case when scope.is_anchored_before then scope.carry_anchored end as opening_balance
    from scope
),

days as (
    select account_id, customer_id, source, first_day, is_anchored_before, opening_balance, carry_flow,
        cast(unnest(generate_series(window_start, last_day, interval 1 day)) as date) as ds
    from spans
    where window_start <= last_day
),

joined as (
    select days.account_id, days.customer_id, days.source, days.first_day, days.is_anchored_before,
        days.opening_balance, days.carry_flow, days.ds,
        coalesce(window_postings.net_flow, 0) as net_flow,
        coalesce(window_postings.n_postings, 0) as n_postings,
        window_reported.balance as reported_balance,
        sum(coalesce(window_postings.net_flow, 0)) over upto_now as cum_flow
    from days
    left join window_postings using (account_id, ds)
    left join window_reported using (account_id, ds)
    window upto_now as (partition by days.account_id order by days.ds rows unbounded preceding)
),

anchored as (
    -- per day: the latest report so far (the anchor), the report before a reported day (its reconciliation) and
    -- the account's first report in the window, each with the cumulative flow on its day: windows over the day's
    -- own account, not joins back to the reports (three hash joins of every day cost a third of the series)
    select joined.*,
        last_value(reported_balance ignore nulls) over upto_now as anchor_balance,
        last_value(report_cum_flow ignore nulls) over upto_now as anchor_cum_flow,
        case when reported_balance is not null
            then last_value(reported_balance ignore nulls) over before_now end as previous_balance,
        case when reported_balance is not null
            then last_value(report_cum_flow ignore nulls) over before_now end as previous_cum_flow,
        first_value(reported_balance ignore nulls) over whole_window as first_balance,
        first_value(report_cum_flow ignore nulls) over whole_window as first_cum_flow,
        first_value(report_day ignore nulls) over whole_window as first_report_day
    from (
        select joined.*,
            case when reported_balance is not null then cum_flow end as report_cum_flow,
            case when reported_balance is not null then ds end as report_day
        from joined
    ) as joined
    window upto_now as (partition by account_id order by ds rows unbounded preceding),
        before_now as (partition by account_id order by ds rows between unbounded preceding and 1 preceding),
        whole_window as (partition by account_id order by ds rows between unbounded preceding and unbounded following)
),

core_spans as (
    -- the days each current account here is part of the series: an external account makes the cash position only
    -- on a day its customer holds none here
    select customer_id, first_day, last_day
    from spans
    where source = 'core'
),

external_covered as (
    -- the days on which an external account's customer holds a current account here (the external accounts' days
    -- alone are looked up: a lookup of every day of every account cost more than a fifth of the series)
    select external.account_id, external.ds
    from (
        select account_id, customer_id,
            cast(unnest(generate_series(window_start, last_day, interval 1 day)) as date) as ds
        from spans
        where source is distinct from 'core' and window_start <= last_day
    ) as external
    join core_spans
        on core_spans.customer_id = external.customer_id
        and external.ds between core_spans.first_day and core_spans.last_day
    group by all
),

flagged as (
    select anchored.*, covered.account_id is not null as is_covered
    from anchored
    left join external_covered as covered
        on covered.account_id = anchored.account_id and covered.ds = anchored.ds
),

final as (
    select
        account_id,
        customer_id,
        source,
        ds,
        first_day,
        source = 'core' or not is_covered as is_primary,
        net_flow,
        n_postings,
        reported_balance is not null as is_reported,
        is_anchored_before,
        case when not is_anchored_before then first_report_day end as report_day,
        case
            when anchor_balance is not null then anchor_balance + cum_flow - anchor_cum_flow
            when opening_balance is not null then opening_balance + cum_flow
            when first_balance is not null then first_balance - (first_cum_flow - cum_flow)
            else carry_flow + cum_flow
        end as balance,
        case
            when reported_balance is not null and previous_balance is not null
                then round(reported_balance - (previous_balance + cum_flow - previous_cum_flow), 2)
            when reported_balance is not null and opening_balance is not null
                then round(reported_balance - (opening_balance + cum_flow), 2)
        end as reconciliation_gap
    from flagged
)

select * from final
