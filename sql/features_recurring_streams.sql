-- Recurring streams as of each cut-off: a counterparty that pays the customer, or is paid by them, at a regular
-- cadence (weekly, fortnightly, four-weekly, monthly, quarterly, yearly), with its typical amount, the next date it
-- is expected and where it is in its life: early (few occurrences yet), mature, or stopped (overdue by half a
-- cadence or more). Card spending is left out except subscription-like merchant codes.
-- A stream of own-account transfers (most of its postings move money between the customer's own accounts) is kept
-- with is_own_transfer: never income, never a bill. on_cash_position (own-account transfer streams only, null for
-- the others): its latest posting was on an account that makes the cash position that day (before the daily series
-- starts: on a current account).
with own_positions as (
    -- where each own-account transfer was booked: on the cash position that day or not
    select
        transactions_in.transaction_id,
        coalesce(primary_days.account_id is not null
                 and transactions_in.booking_date >= getvariable('series_start'), false)
            or (transactions_in.booking_date < getvariable('series_start') and accounts_in.product = 'current')
            as on_cash_position
    from transactions_in
    left join primary_days
        on primary_days.account_id = transactions_in.account_id and primary_days.ds = transactions_in.booking_date
    left join accounts_in on accounts_in.account_id = transactions_in.account_id
    where transactions_in.is_stream_candidate and transactions_in.is_own_transfer
),

postings as (
    select transactions_in.*, own_positions.on_cash_position
    from transactions_in
    left join own_positions using (transaction_id)
    where transactions_in.is_stream_candidate
),

candidates as (
    select
        cutoffs.cutoff,
        postings.customer_id,
        postings.stream_key,
        postings.amount_value > 0 as is_inflow,
        postings.booking_date,
        sum(postings.amount_value) as amount,
        min(postings.channel) as channel,
        bool_and(postings.is_own_transfer) as is_own_transfer,
        bool_or(postings.on_cash_position) as on_cash_position
    from postings
    join cutoffs
        on postings.booking_date <= cutoffs.cutoff
        and postings.booking_date > cutoffs.cutoff - cast(getvariable('stream_lookback_days') as integer)
    group by all
),

spaced as (
    select *,
        booking_date - lag(booking_date) over occurrences as gap_days,
        row_number() over (partition by cutoff, customer_id, stream_key, is_inflow order by booking_date desc) as n_recent
    from candidates
    window occurrences as (partition by cutoff, customer_id, stream_key, is_inflow order by booking_date)
),

summarised as (
    select
        cutoff, customer_id, stream_key, is_inflow,
        min(channel) as channel,
        count(*) as n_occurrences,
        median(gap_days) as median_gap_days,
        list(gap_days order by booking_date) filter (where gap_days is not null) as gaps,
        min(booking_date) as first_date,
        max(booking_date) as last_date,
        median(amount) filter (where n_recent <= 3) as recent_amount,
        stddev_pop(abs(amount)) / nullif(avg(abs(amount)), 0) as amount_cv,
        count(*) filter (where is_own_transfer) * 2 > count(*) as is_own_transfer,
        arg_max(on_cash_position, booking_date) as on_cash_position
    from spaced
    group by all
    having count(*) >= 2
),

classified as (
    select
        summarised.*,
        cadences.cadence,
        cadences.cadence_days,
        len(list_filter(summarised.gaps, lambda g: abs(g - cadences.cadence_days) <= cadences.tolerance
            or (cadences.cadence = 'monthly' and g between 28 and 31)))
            / len(summarised.gaps) as regularity,
        row_number() over (
            partition by summarised.cutoff, summarised.customer_id, summarised.stream_key, summarised.is_inflow
            order by cadences.priority
        ) as n_match
    from summarised
    join cadences on abs(summarised.median_gap_days - cadences.cadence_days) <= cadences.tolerance
),

qualified as (
    select *
    from classified
    where n_match = 1
        and n_occurrences >= case when cadence = 'yearly' then 2 else getvariable('stream_min_occurrences') end
        and regularity >= getvariable('stream_min_regularity')
        and coalesce(amount_cv, 0) <= getvariable('stream_max_amount_cv')
),

final as (
    select
        md5(customer_id || '|' || stream_key || '|' || cast(is_inflow as varchar)) as stream_id,
        customer_id,
        cutoff,
        stream_key,
        case when is_inflow then 'in' else 'out' end as direction,
        channel,
        cadence,
        cadence_days,
        n_occurrences,
        round(regularity, 3) as regularity,
        round(recent_amount, 2) as amount,
        round(coalesce(amount_cv, 0), 3) as amount_cv,
        first_date,
        last_date,
        case
            when cadence = 'monthly' then cast(last_date + interval 1 month as date)
            when cadence = 'quarterly' then cast(last_date + interval 3 month as date)
            when cadence = 'yearly' then cast(last_date + interval 1 year as date)
            else cast(last_date + cadence_days as date)
        end as next_expected_date,
        case
            when cutoff - last_date > 1.5 * cadence_days + 2 then 'stopped'
            when n_occurrences < 4 and cadence not in ('quarterly', 'yearly') then 'early'
            else 'mature'
        end as lifecycle,
        is_own_transfer,
        on_cash_position
    from qualified
)

select * from final
