-- Where a recurring stream is in its life on a cut-off: stopped (overdue by more than one and a half cadences plus
-- two days), early (fewer than 4 occurrences, quarterly and yearly streams aside) or mature. A macro: the streams'
-- SQL (sql/features_recurring_streams.sql) and the night's streams carried from the night before use it.
create or replace temp macro stream_lifecycle(cutoff, last_date, cadence, cadence_days, n_occurrences) as
    case
        when cutoff - last_date > 1.5 * cadence_days + 2 then 'stopped'
        when n_occurrences < 4 and cadence not in ('quarterly', 'yearly') then 'early'
        else 'mature'
    end
