-- Accounts whose reported balances disagree with their postings within the series window up to the last cut-off:
-- the number of reported days with a gap of a penny or more, the total gap, the first and last such day
-- (gold balance_reconciliation: a data-quality finding, never silently fixed).
-- Reads: account_days, cutoffs.
with gaps as (
    select account_id, customer_id, source, ds, reconciliation_gap
    from account_days
    where abs(reconciliation_gap) >= 0.01 and ds <= (select max(cutoff) from cutoffs)
),

final as (
    select account_id, customer_id, source, count(*) as n_gap_days,
        round(sum(abs(reconciliation_gap)), 2) as total_abs_gap, min(ds) as first_gap_day, max(ds) as last_gap_day
    from gaps
    group by all
)

select * from final
