-- One row per current account and day from `series_start` to the last cut-off: the end-of-day balance as reported
-- where the bank reported one, rebuilt from the postings where it did not (carried forward from the last reported
-- balance, the seed before the window included, or back from the first one), and the reconciliation gap on
-- reported days: reported minus (previous reported plus the postings in between). A gap is a data-quality
-- finding; the reported balance is kept as it is. `first_day` is the account's first day of data, however old.
-- The cash position is the customer's current accounts at this bank; on a day when the customer holds none here
-- (never did, or closed it after switching banks) their consented external current accounts (open banking) are the
-- cash position instead: `is_primary` marks the accounts that make the position on each day.
with scope as (
    select account_id, customer_id, source, opened_on, closed_on
    from accounts_in
    where product = 'current'
),

all_postings as (
    select transactions_in.account_id, transactions_in.booking_date as ds,
        sum(transactions_in.amount_value) as net_flow, count(*) as n_postings
    from transactions_in
    semi join scope using (account_id)
    where transactions_in.booking_date <= getvariable('last_cutoff')
    group by all
),

all_reported as (
    select balances_in.account_id, balances_in.as_of as ds, max(balances_in.balance_value) as balance
    from balances_in
    semi join scope using (account_id)
    where balances_in.as_of <= getvariable('last_cutoff')
    group by all
),

first_seen as (
    select account_id, min(ds) as first_day from (
        select account_id, ds from all_postings
        union all
        select account_id, ds from all_reported
    )
    group by all
),

seeds as (
    -- the last balance reported before the window, and the postings between it and the window
    select all_reported.account_id, arg_max(all_reported.balance, all_reported.ds) as seed_balance,
        max(all_reported.ds) as seed_day
    from all_reported
    where all_reported.ds < getvariable('series_start')
    group by all
),

seed_flows as (
    select all_postings.account_id, sum(all_postings.net_flow) as flow_since_seed
    from all_postings
    join seeds
        on seeds.account_id = all_postings.account_id
        and all_postings.ds > seeds.seed_day
        and all_postings.ds < getvariable('series_start')
    group by all
),

spans as (
    select scope.account_id, scope.customer_id, scope.source, first_seen.first_day,
        greatest(first_seen.first_day, getvariable('series_start')) as window_start,
        least(getvariable('last_cutoff'), coalesce(scope.closed_on, getvariable('last_cutoff'))) as last_day,
        seeds.seed_balance + coalesce(seed_flows.flow_since_seed, 0) as opening_balance
    from scope
    join first_seen using (account_id)
    left join seeds using (account_id)
    left join seed_flows using (account_id)
),

days as (
    select account_id, customer_id, source, first_day, opening_balance,
        cast(unnest(generate_series(window_start, last_day, interval 1 day)) as date) as ds
    from spans
    where window_start <= last_day
),

joined as (
    select days.account_id, days.customer_id, days.source, days.first_day, days.opening_balance, days.ds,
        coalesce(all_postings.net_flow, 0) as net_flow,
        coalesce(all_postings.n_postings, 0) as n_postings,
        all_reported.balance as reported_balance,
        sum(coalesce(all_postings.net_flow, 0)) over (
            partition by days.account_id order by days.ds rows unbounded preceding
        ) as cum_flow
    from days
    left join all_postings using (account_id, ds)
    left join all_reported using (account_id, ds)
),

anchored as (
    select *,
        last_value(reported_balance ignore nulls) over upto_now as anchor_balance,
        last_value(case when reported_balance is not null then cum_flow end ignore nulls) over upto_now as anchor_cum_flow,
        last_value(reported_balance ignore nulls) over before_now as previous_balance,
        last_value(case when reported_balance is not null then cum_flow end ignore nulls) over before_now as previous_cum_flow,
        first_value(reported_balance ignore nulls) over whole as first_balance,
        first_value(case when reported_balance is not null then cum_flow end ignore nulls) over whole as first_cum_flow
    from joined
    window
        upto_now as (partition by account_id order by ds rows between unbounded preceding and current row),
        before_now as (partition by account_id order by ds rows between unbounded preceding and 1 preceding),
        whole as (partition by account_id order by ds rows between unbounded preceding and unbounded following)
),

final as (
    select
        account_id,
        customer_id,
        source,
        ds,
        first_day,
        source = 'core' or not bool_or(source = 'core') over (partition by customer_id, ds) as is_primary,
        net_flow,
        n_postings,
        reported_balance is not null as is_reported,
        first_balance is not null or opening_balance is not null as has_reported_balance,
        case
            when anchor_balance is not null then anchor_balance + cum_flow - anchor_cum_flow
            when opening_balance is not null then opening_balance + cum_flow
            when first_balance is not null then first_balance - (first_cum_flow - cum_flow)
            else cum_flow
        end as balance,
        case
            when reported_balance is not null and previous_balance is not null
                then round(reported_balance - (previous_balance + cum_flow - previous_cum_flow), 2)
            when reported_balance is not null and opening_balance is not null
                then round(reported_balance - (opening_balance + cum_flow), 2)
        end as reconciliation_gap
    from anchored
)

select * from final
