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
--   whose typical payment is at least `replacement_min_amount_ratio` of the replaced one's, that has paid
--   `replacement_min_payments` (2) times or more and whose text never names redundancy pay: a new employer's salary
--   after the old one's, on any account (replaced_by: that payer; replaced_by_amount, _last_day, _payments,
--   _gap_days: its typical payment, its latest payment, how many it made in the stream look-back and the mean days
--   between them);
-- - pending: a stopped payer that such a payer would replace but for its second payment (one payment the size of a
--   salary may be a bonus, a refund or a one-off transfer): nothing is said of the income until it comes or the
--   payment is 40 days old (customer_features.is_income_pending, life_event_features.is_income_pending).
-- Read for stopped payers only: sql/features_life_events.sql (a stopped salary that was replaced, or whose
-- replacement is pending, is no salary_stopped), the stopped_salary evidence (pipelines/life_events.py) and
-- sql/features_customer.sql (a stopped stream that was replaced or is pending is no is_income_stopped; a replaced
-- one goes on under its new payer in the regular income).
-- Reads: day_rows, stream_first, cutoffs; variables stream_lookback_days, stopped_lookback_days,
-- stopped_min_occurrences, stopped_silent_days, replacement_overlap_days, replacement_min_amount_ratio,
-- replacement_min_payments.
with payments as (
    select customer_id, stream_key, income_kind as kind, ds, n, amount / n as each_amount,
        list_contains(signals, 'redundancy') as names_redundancy
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
        median(payments.each_amount) as amount,
        sum(payments.n) as n_payments,
        bool_or(payments.names_redundancy) as names_redundancy
    from payments
    join cutoffs
        on payments.ds <= cutoffs.cutoff
        and payments.ds > cutoffs.cutoff - getvariable('stream_lookback_days')
    group by all
),

states as (
    select payers.cutoff, payers.customer_id, payers.stream_key, payers.kind,
        coalesce(firsts.first_day, payers.first_seen_day) as first_day,
        payers.last_day, payers.n_recent, payers.amount, payers.n_payments, payers.names_redundancy,
        payers.cutoff - payers.last_day < getvariable('stopped_silent_days') as is_paying,
        payers.n_recent >= getvariable('stopped_min_occurrences') as is_regular
    from payers
    left join firsts using (customer_id, stream_key, kind)
),

candidates as (
    -- the payers of the same kind new since each payer's last payment, still paying, of at least the share of its
    -- typical payment, not redundancy pay; confirmed once they paid `replacement_min_payments` times
    select old.cutoff, old.customer_id, old.stream_key, old.kind,
        new.stream_key as new_key, new.first_day as new_first_day, new.amount as new_amount,
        new.last_day as new_last_day, new.n_payments as new_payments,
        new.n_payments >= getvariable('replacement_min_payments') as is_confirmed
    from states as old
    join states as new
        on new.cutoff = old.cutoff
        and new.customer_id = old.customer_id
        and new.kind = old.kind
        and new.stream_key <> old.stream_key
        and new.is_paying
        and not new.names_redundancy
        and new.first_day > old.first_day
        and new.first_day >= old.last_day - getvariable('replacement_overlap_days')
        and new.amount >= getvariable('replacement_min_amount_ratio') * old.amount
),

replacements as (
    -- the earliest confirmed one replaced the payer; a payer with only unconfirmed ones is pending
    select cutoff, customer_id, stream_key, kind,
        arg_min(new_key, (new_first_day, new_key)) filter (where is_confirmed) as replaced_by,
        arg_min(new_amount, (new_first_day, new_key)) filter (where is_confirmed) as replaced_by_amount,
        arg_min(new_last_day, (new_first_day, new_key)) filter (where is_confirmed) as replaced_by_last_day,
        arg_min(new_payments, (new_first_day, new_key)) filter (where is_confirmed) as replaced_by_payments,
        arg_min((new_last_day - new_first_day) / (new_payments - 1), (new_first_day, new_key))
            filter (where is_confirmed) as replaced_by_gap_days,
        bool_or(not is_confirmed) as has_unconfirmed
    from candidates
    group by all
),

final as (
    select states.cutoff, states.customer_id, states.stream_key, states.kind, states.first_day, states.last_day,
        states.n_recent, states.amount,
        states.is_regular and states.is_paying as is_steady,
        states.is_regular and not states.is_paying as is_stopped,
        replacements.replaced_by is not null as is_replaced,
        states.is_regular and not states.is_paying and replacements.replaced_by is null
            and coalesce(replacements.has_unconfirmed, false) as is_pending,
        replacements.replaced_by,
        replacements.replaced_by_amount,
        replacements.replaced_by_last_day,
        replacements.replaced_by_payments,
        replacements.replaced_by_gap_days
    from states
    left join replacements using (cutoff, customer_id, stream_key, kind)
)

select * from final
