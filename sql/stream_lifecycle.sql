-- Two macros of a recurring stream, used by the streams' SQL (sql/features_recurring_streams.sql), the night's streams
-- carried from the night before and the income a new payer continues (sql/features_customer.sql).
--
-- Where a recurring stream is in its life on a cut-off: stopped (overdue by more than one and a half cadences plus
-- two days), early (fewer than 4 occurrences, quarterly and yearly streams aside) or mature.
create or replace temp macro stream_lifecycle(cutoff, last_date, cadence, cadence_days, n_occurrences) as
    case
        when cutoff - last_date > 1.5 * cadence_days + 2 then 'stopped'
        when n_occurrences < 4 and cadence not in ('quarterly', 'yearly') then 'early'
        else 'mature'
    end;

-- When a stream's next payment is due: one calendar month, quarter or year after its latest (the same day of the
-- month), else its cadence in days.
create or replace temp macro stream_next_date(last_date, cadence, cadence_days) as
    case
        when cadence = 'monthly' then cast(last_date + interval 1 month as date)
        when cadence = 'quarterly' then cast(last_date + interval 3 month as date)
        when cadence = 'yearly' then cast(last_date + interval 1 year as date)
        else cast(last_date + cadence_days as date)
    end
