-- Per cut-off, customer and life-event signal group (config/life_events.yaml mcc_signals and keyword_signals, found
-- when a posting arrives: day_rows.signals): the signal postings of the last 14, 30, 60 and 90 days, their amount
-- over 90 days and those of the 90 days before. pipelines/life_events.py turns this into one column per group and
-- window (n_<group>_14d ... n_<group>_prev90), every configured group present.
-- Reads: day_rows, cutoffs; variable posting_days.
with tagged as (
    select c.cutoff, p.customer_id, c.cutoff - p.ds as age_days, p.n, p.amount, unnest(p.signals) as signal
    from day_rows as p
    join cutoffs as c on p.ds <= c.cutoff and p.ds > c.cutoff - getvariable('posting_days')
    where not p.is_forbidden and len(p.signals) > 0
),

final as (
    select cutoff, customer_id, signal,
        coalesce(sum(n) filter (where age_days < 14), 0) as n_14d,
        coalesce(sum(n) filter (where age_days < 30), 0) as n_30d,
        coalesce(sum(n) filter (where age_days < 60), 0) as n_60d,
        coalesce(sum(n) filter (where age_days < 90), 0) as n_90d,
        coalesce(sum(abs(amount)) filter (where age_days < 90), 0) as amount_90d,
        coalesce(sum(n) filter (where age_days >= 90), 0) as n_prev90
    from tagged
    group by all
)

select * from final
