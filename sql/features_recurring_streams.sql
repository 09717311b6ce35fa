-- Recurring streams as of each cut-off: a counterparty that pays the customer, or is paid by them, at a regular
-- cadence (weekly, fortnightly, four-weekly, monthly, quarterly, yearly), with its typical amount, the next date it
-- is expected and where it is in its life: early (few occurrences yet), mature, or stopped (overdue by half a
-- cadence or more). Card spending is left out except subscription-like merchant codes (is_stream_candidate).
-- A stream of own-account transfers (most of its postings move money between the customer's own accounts) is kept
-- with is_own_transfer: never income, never a bill. on_cash_position (own-account transfer streams only, null for
-- the others): its latest posting was on an account that made the cash position that day (a current account here,
-- or an external one on a day the customer held no current account here).
-- has_open_banking: some of its postings came through open banking (what a withdrawn consent takes away).
-- Reads: stream_candidates (the day_rows of stream candidates: all of them, or the night's streams to redo,
-- pipelines/store.py), accounts_in, account_state, cutoffs, cadences; macro stream_lifecycle
-- (sql/stream_lifecycle.sql); variables stream_lookback_days, stream_min_occurrences, stream_min_regularity,
-- stream_max_amount_cv.
with current_spans as (
    -- the days each current account was part of the customer's cash position could be
    select accounts_in.customer_id, accounts_in.account_id, accounts_in.source, account_state.first_day,
        accounts_in.closed_on
    from accounts_in
    join account_state using (customer_id, account_id)
    where accounts_in.product = 'current'
),

postings as (
    select candidate.*,
        case when candidate.is_own_transfer then
            coalesce(own_span.account_id is not null and (own_span.source = 'core' or not exists (
                select 1 from current_spans as core
                where core.customer_id = candidate.customer_id and core.source = 'core'
                    and candidate.ds between core.first_day and coalesce(core.closed_on, candidate.ds))), false)
        end as on_cash_position
    from stream_candidates as candidate
    left join current_spans as own_span
        on own_span.account_id = candidate.account_id and own_span.customer_id = candidate.customer_id
        and candidate.ds between own_span.first_day and coalesce(own_span.closed_on, candidate.ds)
),

candidates as (
    select
        cutoffs.cutoff,
        postings.customer_id,
        postings.stream_key,
        postings.sign > 0 as is_inflow,
        postings.ds as booking_date,
        sum(postings.amount) as amount,
        min(postings.channel) as channel,
        bool_and(postings.is_own_transfer) as is_own_transfer,
        bool_or(postings.on_cash_position) as on_cash_position,
        bool_or(postings.source <> 'core') as has_open_banking
    from postings
    join cutoffs
        on postings.ds <= cutoffs.cutoff
        and postings.ds > cutoffs.cutoff - cast(getvariable('stream_lookback_days') as integer)
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
        arg_max(on_cash_position, booking_date) as on_cash_position,
        bool_or(has_open_banking) as has_open_banking
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
        stream_next_date(last_date, cadence, cadence_days) as next_expected_date,
        stream_lifecycle(cutoff, last_date, cadence, cadence_days, n_occurrences) as lifecycle,
        is_own_transfer,
        on_cash_position,
        has_open_banking
    from qualified
)

select * from final
