-- The customer's income payers as of each cut-off (docs/life_events.md, "A replaced income is no job loss"): every
-- payer (stream key) of an income (a salary, pension or benefit: day_rows.income_kind; special-category MCCs and
-- own-account transfers left out, as in the life-event features) with a payment in the `stream_lookback_days` (400,
-- what the store keeps of these rows) before the cut-off: its kind, its first payment ever (the store's
-- stream_first), its latest, its payments of the last `stopped_lookback_days` (150), its typical payment (the
-- median), and where it is (config/life_events.yaml stopped_streams and income_replacement):
-- - steady: `stopped_min_occurrences` (3) or more payments in those 150 days, the latest under `stopped_silent_days`
--   (40) ago (what sql/features_income_history.sql calls a steady income);
-- - stopped: as many payments, none in the last 40 days (the job_loss rule's salary_stopped);
-- - replaced: a payer of the same kind new since its last payment (its first payment ever at most
--   `replacement_overlap_days` before that one, and after the replaced payer's first), paid in the last 40 days,
--   whose typical payment is at least `replacement_min_amount_ratio` of the replaced one's: a new employer's salary
--   after the old one's, on any account. Read for stopped payers only: sql/features_life_events.sql (a stopped
--   salary that was replaced is no salary_stopped), the stopped_salary evidence (pipelines/life_events.py) and
--   sql/features_customer.sql (a stopped stream that was replaced is no is_income_stopped).
-- Reads: day_rows, stream_first, cutoffs; variables stream_lookback_days, stopped_lookback_days,
-- stopped_min_occurrences, stopped_silent_days, replacement_overlap_days, replacement_min_amount_ratio.
with payments as (
    select customer_id, stream_key, income_kind as kind, ds, n, amount / n as each_amount
    from day_rows
    where income_kind is not null and not is_forbidden
        and not (is_own_transfer or (channel in ('transfer_in', 'transfer_out') and is_transfer_text))
),

firsts as (
    select customer_id, stream_key, kind, min(first_day) as first_day
    from stream_first
    where direction = 'in'
    group by all
),

payers as (
    select cutoffs.cutoff, payments.customer_id, payments.stream_key, payments.kind,
        min(payments.ds) as first_seen_day,
        max(payments.ds) as last_day,
        coalesce(sum(payments.n) filter (
            where payments.ds > cutoffs.cutoff - getvariable('stopped_lookback_days')), 0) as n_recent,
        median(payments.each_amount) as amount
    from payments
    join cutoffs
        on payments.ds <= cutoffs.cutoff
        and payments.ds > cutoffs.cutoff - getvariable('stream_lookback_days')
    group by all
),

states as (
    select payers.cutoff, payers.customer_id, payers.stream_key, payers.kind,
        coalesce(firsts.first_day, payers.first_seen_day) as first_day,
        payers.last_day, payers.n_recent, payers.amount,
        payers.cutoff - payers.last_day < getvariable('stopped_silent_days') as is_paying,
        payers.n_recent >= getvariable('stopped_min_occurrences') as is_regular
    from payers
    left join firsts using (customer_id, stream_key, kind)
),

replacements as (
    select old.cutoff, old.customer_id, old.stream_key, old.kind,
        arg_min(new.stream_key, new.first_day) as replaced_by
    from states as old
    join states as new
        on new.cutoff = old.cutoff
        and new.customer_id = old.customer_id
        and new.kind = old.kind
        and new.stream_key <> old.stream_key
        and new.is_paying
        and new.first_day > old.first_day
        and new.first_day >= old.last_day - getvariable('replacement_overlap_days')
        and new.amount >= getvariable('replacement_min_amount_ratio') * old.amount
    group by all
),

final as (
    select states.cutoff, states.customer_id, states.stream_key, states.kind, states.first_day, states.last_day,
        states.n_recent, states.amount,
        states.is_regular and states.is_paying as is_steady,
        states.is_regular and not states.is_paying as is_stopped,
        replacements.replaced_by is not null as is_replaced,
        replacements.replaced_by
    from states
    left join replacements using (cutoff, customer_id, stream_key, kind)
)

select * from final
