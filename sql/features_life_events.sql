-- Life-event features (DESIGN section 6 step 5): one row per customer and cut-off, from what the bank saw up to the
-- cut-off. Windowed counts and sums of signal postings (life_event_signal_windows: the last 14/30/60/90 days vs the
-- 90 before, one set per signal group of config/life_events.yaml), outgoing direct debits and standing orders that
-- started in the last 60 days by kind, income streams that started or stopped, cash, card and foreign-currency
-- spending, transfers to savings and the balance trend.
-- Reads: day_rows, balances_in, accounts_in, customers_in, customer_state, home_counts, stream_first (the feature
-- store, pipelines/store.py), income_history (sql/features_income_history.sql), income_payers
-- (sql/features_income_payers.sql), cutoffs(cutoff),
-- life_event_signal_windows (pipelines/life_events.py, from sql/features_life_event_signals.sql).
-- Postings with a forbidden (special-category) MCC are left out (day_rows.is_forbidden): no feature, not even a
-- total, sees them.
with
account_products as (
    select account_id, product from accounts_in
),
home_totals as (
    select customer_id, kind, value, sum(n) as n from home_counts group by all
),
customer_home as (
    -- the customer's usual currency and country: the most frequent ones of their postings (the first in
    -- alphabetical order on a tie), and their first posting
    select f.customer_id, h.home_currency, h.home_country, f.first_posting_date
    from (select customer_id, min(first_posting_day) as first_posting_date from customer_state group by all) as f
    left join (
        select customer_id,
            first(value order by n desc, value) filter (where kind = 'currency') as home_currency,
            first(value order by n desc, value) filter (where kind = 'country') as home_country
        from home_totals
        group by customer_id
    ) as h using (customer_id)
),
postings as (
    select
        p.customer_id, p.ds as booking_date, p.n, p.sign, p.channel, p.country, p.category, p.stream_key, p.signals,
        p.amount as amount_value, p.max_neg_amount, p.income_kind, p.outflow_kind,
        (p.sign < 0 and p.currency <> h.home_currency) as is_foreign_ccy,
        (p.sign < 0 and p.country is not null and p.country <> h.home_country) as is_foreign_country,
        (p.channel = 'atm' or p.category in ('eating_out', 'transport', 'groceries')) as is_inperson,
        -- money between the customer's own accounts (pipelines/store.py): never income, never a new bill
        (p.is_own_transfer or (p.channel in ('transfer_in', 'transfer_out') and p.is_transfer_text))
            as is_own_transfer,
        (p.sign < 0 and p.channel = 'transfer_out' and p.is_transfer_text and p.is_saving_text) as is_to_savings
    from day_rows as p
    left join customer_home as h on h.customer_id = p.customer_id
    where not p.is_forbidden
),
recent_postings as (
    -- every posting in the `posting_days` (180) up to each cut-off, with its age in days
    select c.cutoff, p.*, c.cutoff - p.booking_date as age_days
    from postings as p
    join cutoffs as c on p.booking_date <= c.cutoff and p.booking_date > c.cutoff - getvariable('posting_days')
),
inflows as (
    -- income postings by kind: salary, pension (a credit naming a pension) and other benefits
    select customer_id, booking_date, n, amount_value, stream_key, income_kind as kind
    from postings
    where income_kind is not null and not is_own_transfer
),
inflow_windows as (
    select i.cutoff, i.customer_id,
        coalesce(sum(i.n) filter (where i.kind = 'salary' and i.age_days < 40), 0) as n_salary_40d,
        coalesce(sum(i.n) filter (where i.kind = 'salary' and i.age_days between 40 and 129), 0) as n_salary_prev90,
        coalesce(sum(i.amount_value) filter (where i.kind = 'salary' and i.age_days < 35), 0) as amount_salary_35d,
        coalesce(sum(i.amount_value) filter (where i.kind = 'salary' and i.age_days between 35 and 124), 0) as amount_salary_prev90,
        count(distinct i.stream_key) filter (where i.kind = 'salary' and i.age_days < 45) as n_salary_payers_45d,
        count(distinct i.stream_key) filter (where i.kind = 'salary' and i.age_days between 45 and 134) as n_salary_payers_prev90,
        min(i.age_days) filter (where i.kind = 'salary') as days_since_last_salary,
        coalesce(sum(i.n) filter (where i.kind = 'pension' and i.age_days < 60), 0) as n_pension_in_60d,
        coalesce(sum(i.n) filter (where i.kind = 'pension' and i.age_days between 60 and 149), 0) as n_pension_in_prev90,
        coalesce(sum(i.n) filter (where i.kind = 'benefit' and i.age_days < 60), 0) as n_benefit_in_60d,
        coalesce(sum(i.n) filter (where i.kind = 'benefit' and i.age_days between 60 and 149), 0) as n_benefit_in_prev90,
        coalesce(sum(i.amount_value) filter (where i.age_days < 35), 0) as amount_income_35d,
        coalesce(sum(i.amount_value) filter (where i.age_days between 35 and 124), 0) as amount_income_prev90
    from (select c.cutoff, i.*, c.cutoff - i.booking_date as age_days
          from inflows as i join cutoffs as c
              on i.booking_date <= c.cutoff and i.booking_date > c.cutoff - getvariable('posting_days')) as i
    group by i.cutoff, i.customer_id
),
payday_shift as (
    -- days between the day of month of the latest salary and the one before it (a new payday)
    -- (a day with two salaries counts twice: the shift is 0)
    select cutoff, customer_id,
        abs(day(max(booking_date)) - day(max(booking_date, 2)[2])) as payday_shift_days
    from (select c.cutoff, i.customer_id, i.booking_date, unnest(range(least(i.n, 2))) as copy
          from inflows as i join cutoffs as c on i.booking_date <= c.cutoff and i.booking_date > c.cutoff - 100
          where i.kind = 'salary') as s
    group by cutoff, customer_id
    having count(*) >= 2
),
outflow_streams as (
    -- outgoing direct debits and standing orders, with the kind of what they pay (store_postings.sql)
    select p.customer_id, p.stream_key, p.booking_date, p.n, p.outflow_kind as kind
    from postings as p
    where p.outflow_kind is not null and not p.is_own_transfer
),
stream_starts as (
    -- the first posting of each payer or payee, over the whole history (the store's stream_first), and the source
    -- (core or openbanking) it was first seen on; a new stream starts then. Streams seen at the very start of that
    -- source's history are not new to the customer, only new to the data, and are left out: a core history that
    -- starts after an open-banking backfill (or a customer's consented external account) made every salary paid
    -- here look new on a bank of a month or two
    select customer_id, stream_key, kind, direction, min(first_day) as first_date,
        arg_min(source, first_day) as first_source
    from stream_first
    group by customer_id, stream_key, kind, direction
),
source_starts as (
    select customer_id, source, min(first_posting_day) as first_posting_date from customer_state group by all
),
new_streams as (
    select f.customer_id, f.stream_key, f.kind, f.direction, f.first_date
    from stream_starts as f
    join source_starts as s on s.customer_id = f.customer_id and s.source = f.first_source
    where f.first_date - s.first_posting_date >= 60
),
new_inflow_windows as (
    select c.cutoff, f.customer_id,
        count(*) filter (where f.kind = 'salary' and c.cutoff - f.first_date < 45) as n_new_salary_payers_45d,
        count(*) filter (where f.kind = 'pension' and c.cutoff - f.first_date < 60) as n_new_pension_payers_60d,
        count(*) filter (where f.kind = 'benefit' and c.cutoff - f.first_date < 60) as n_new_benefit_payers_60d
    from new_streams as f
    join cutoffs as c on f.first_date <= c.cutoff and f.first_date > c.cutoff - 60
    where f.direction = 'in'
    group by c.cutoff, f.customer_id
),
new_salary_payments as (
    -- the typical (median) payment of each new salary payer first paid in the last 45 days that still pays (a
    -- payment in the last `stopped_silent_days`, 40: one payment and nothing for 40 days is no job), up to the
    -- cut-off; the largest of them per customer (the new_job rule's amount: a payroll payment of a few pounds is
    -- no new job)
    select cutoff, customer_id, max(payment) as new_salary_payment_45d
    from (
        select c.cutoff, f.customer_id, f.stream_key, median(i.amount_value / i.n) as payment,
            max(i.booking_date) as last_date
        from new_streams as f
        join cutoffs as c on f.first_date <= c.cutoff and f.first_date > c.cutoff - 45
        join inflows as i
            on i.customer_id = f.customer_id and i.stream_key = f.stream_key and i.kind = f.kind
            and i.booking_date <= c.cutoff and i.booking_date > c.cutoff - 45
        where f.direction = 'in' and f.kind = 'salary'
        group by all
    )
    where cutoff - last_date < getvariable('stopped_silent_days')
    group by all
),
new_outflow_windows as (
    select c.cutoff, f.customer_id,
        count(*) filter (where f.kind = 'mortgage' and c.cutoff - f.first_date < 60) as n_new_dd_mortgage_60d,
        count(*) filter (where f.kind = 'utilities' and c.cutoff - f.first_date < 60) as n_new_dd_utilities_60d,
        count(*) filter (where f.kind = 'council_tax' and c.cutoff - f.first_date < 60) as n_new_dd_council_tax_60d,
        count(*) filter (where f.kind = 'nursery' and c.cutoff - f.first_date < 60) as n_new_dd_nursery_60d,
        count(*) filter (where f.kind = 'rent' and c.cutoff - f.first_date < 60) as n_new_dd_rent_60d,
        count(*) filter (where f.kind = 'other' and c.cutoff - f.first_date < 60) as n_new_dd_other_60d
    from new_streams as f
    join cutoffs as c on f.first_date <= c.cutoff and f.first_date > c.cutoff - 60
    where f.direction = 'out'
    group by c.cutoff, f.customer_id
),
stream_activity as (
    -- per outgoing stream and cut-off: occurrences in the `stopped_lookback_days` (150) before it and the latest one
    select c.cutoff, s.customer_id, s.stream_key, s.kind, 'out' as direction,
        sum(s.n) as n_occurrences, max(s.booking_date) as last_date
    from outflow_streams as s
    join cutoffs as c
        on s.booking_date <= c.cutoff and s.booking_date > c.cutoff - getvariable('stopped_lookback_days')
    group by c.cutoff, s.customer_id, s.stream_key, s.kind
),
stopped_streams as (
    -- a regular stream (3+ occurrences) silent for the last 40 days (config/life_events.yaml stopped_streams):
    -- stopped; an income's the same way (income_payers, sql/features_income_payers.sql), unless a new payer of the
    -- same kind replaced it (a new employer's salary after the old one's: no stopped salary) or may be replacing it
    -- (pending: one payment so far; the income events are not judged then, is_income_pending)
    select cutoff, customer_id, stream_key, kind, direction
    from stream_activity
    where n_occurrences >= getvariable('stopped_min_occurrences')
        and cutoff - last_date >= getvariable('stopped_silent_days')
    union all
    select cutoff, customer_id, stream_key, kind, 'in' as direction
    from income_payers
    where is_stopped and not is_replaced and not is_pending
),
income_pending as (
    select cutoff, customer_id, bool_or(is_pending) as is_income_pending from income_payers group by all
),
stopped_windows as (
    select o.cutoff, o.customer_id,
        count(*) filter (where o.direction = 'out') as n_stopped_outflow_streams,
        count(*) filter (where o.direction = 'out' and o.kind = 'rent') as n_stopped_rent_streams,
        cast(count(*) filter (where o.direction = 'in' and o.kind = 'salary') > 0 as integer) as salary_stopped,
        count(*) filter (where o.direction = 'in') as n_stopped_inflow_streams
    from stopped_streams as o
    group by o.cutoff, o.customer_id
),
spend_windows as (
    select p.cutoff, p.customer_id,
        coalesce(sum(p.n) filter (where p.channel = 'card' and p.age_days < 30), 0) as n_card_30d,
        coalesce(sum(-p.amount_value) filter (where p.channel = 'card' and p.age_days < 30), 0) as amount_card_30d,
        coalesce(sum(-p.amount_value) filter (where p.channel = 'card' and p.age_days between 30 and 119), 0) as amount_card_prev90,
        coalesce(sum(p.n) filter (where p.channel = 'card' and p.age_days between 30 and 119), 0) as n_card_prev90,
        coalesce(max(p.max_neg_amount) filter (where p.channel = 'card' and p.age_days < 30), 0) as max_card_amount_30d,
        coalesce(sum(p.n) filter (where p.channel = 'atm' and p.age_days < 30), 0) as n_atm_30d,
        coalesce(sum(-p.amount_value) filter (where p.channel = 'atm' and p.age_days < 30), 0) as amount_atm_30d,
        coalesce(sum(-p.amount_value) filter (where p.channel = 'atm' and p.age_days between 30 and 119), 0) as amount_atm_prev90,
        coalesce(sum(-p.amount_value) filter (where p.sign < 0 and p.age_days < 30 and not p.is_own_transfer), 0) as amount_out_30d,
        coalesce(sum(-p.amount_value) filter (where p.sign < 0 and p.age_days between 30 and 119 and not p.is_own_transfer), 0) as amount_out_prev90,
        coalesce(sum(-p.amount_value) filter (where p.is_to_savings and p.age_days < 90), 0) as amount_to_savings_90d,
        coalesce(sum(-p.amount_value) filter (where p.is_to_savings and p.age_days >= 90), 0) as amount_to_savings_prev90,
        -- a deposit saved up month by month, or one lump sum parked in savings: in how many of the last three
        -- 30-day windows money went to savings, and the largest single transfer of the 90 days (named deposit_*:
        -- what a credit offer's corroboration reads, not a model feature: no model's signal group matches them)
        count(distinct p.age_days // 30) filter (where p.is_to_savings and p.age_days < 90) as n_deposit_months_90d,
        max(p.max_neg_amount) filter (where p.is_to_savings and p.age_days < 90) as deposit_largest_90d,
        coalesce(sum(p.n) filter (where p.is_foreign_ccy and p.age_days < 14), 0) as n_foreign_ccy_14d,
        coalesce(sum(p.n) filter (where p.is_foreign_ccy and p.age_days < 30), 0) as n_foreign_ccy_30d,
        coalesce(sum(p.n) filter (where p.is_foreign_country and p.age_days < 14), 0) as n_foreign_country_14d,
        coalesce(sum(p.n) filter (where p.is_foreign_country and p.is_inperson and p.age_days < 14), 0) as n_foreign_inperson_14d,
        coalesce(sum(p.n) filter (where p.is_foreign_country and p.channel = 'atm' and p.age_days < 30), 0) as n_foreign_atm_30d,
        count(distinct p.booking_date) filter (where (p.is_foreign_country or p.is_foreign_ccy) and p.age_days < 14) as n_foreign_days_14d,
        count(distinct p.country) filter (where p.is_foreign_country and p.age_days < 30) as n_distinct_foreign_countries_30d,
        count(distinct p.category) filter (where (p.is_foreign_country or p.is_foreign_ccy) and p.age_days < 14) as n_distinct_foreign_categories_14d,
        coalesce(sum(-p.amount_value) filter (where (p.is_foreign_country or p.is_foreign_ccy) and p.age_days < 30), 0) as amount_foreign_30d,
        coalesce(sum(p.n) filter (where (p.is_foreign_country or p.is_foreign_ccy) and p.age_days >= 90), 0) as n_foreign_prev90
    from recent_postings as p
    group by p.cutoff, p.customer_id
),
customer_balances as (
    -- the customer's end-of-day balance over current and savings accounts
    select b.customer_id, b.as_of,
        sum(b.balance_value) filter (where coalesce(a.product, 'current') in ('current', 'savings')) as balance_value,
        sum(b.balance_value) filter (where a.product = 'savings') as savings_value
    from balances_in as b
    left join account_products as a on a.account_id = b.account_id
    group by b.customer_id, b.as_of
),
balance_windows as (
    select b.cutoff, b.customer_id,
        avg(b.balance_value) filter (where b.age_days < 30) as balance_mean_30d,
        avg(b.balance_value) filter (where b.age_days between 30 and 119) as balance_mean_prev90,
        avg(b.savings_value) filter (where b.age_days < 30) as savings_balance_mean_30d,
        avg(b.savings_value) filter (where b.age_days between 30 and 119) as savings_balance_mean_prev90
    from (select c.cutoff, b.*, c.cutoff - b.as_of as age_days
          from customer_balances as b join cutoffs as c
              on b.as_of <= c.cutoff and b.as_of > c.cutoff - getvariable('balance_days')) as b
    group by b.cutoff, b.customer_id
),
new_accounts as (
    select c.cutoff, a.customer_id,
        count(*) filter (where a.product = 'mortgage') as n_new_mortgage_accounts_60d,
        count(*) filter (where a.product = 'savings') as n_new_savings_accounts_60d
    from accounts_in as a
    join cutoffs as c on a.opened_on <= c.cutoff and a.opened_on > c.cutoff - 60
    group by c.cutoff, a.customer_id
),
spine as (
    select cu.customer_id, c.cutoff,
        year(c.cutoff) - cu.birth_year as age_years,
        c.cutoff - cu.customer_since as tenure_days,
        c.cutoff - h.first_posting_date as history_days,
        -- the history of the customer's newest source or current account (sql/features_income_history.sql, as
        -- customer_features.income_history_days): not a model feature, the gate of the income events
        -- (config/life_events.yaml `needs_income_history`: a salary that seems to stop, or to start, may only
        -- have moved to an account too new to show it)
        c.cutoff - ih.first_day + 1 as income_history_days,
        -- a stopped income a new payer may be replacing, paid once so far (sql/features_income_payers.sql
        -- is_pending, as customer_features.is_income_pending): not a model feature, the income events' other gate
        coalesce(ip.is_income_pending, false) as is_income_pending
    from customers_in as cu
    cross join cutoffs as c
    left join customer_home as h on h.customer_id = cu.customer_id
    left join income_history as ih on ih.customer_id = cu.customer_id and ih.cutoff = c.cutoff
    left join income_pending as ip on ip.customer_id = cu.customer_id and ip.cutoff = c.cutoff
    where h.first_posting_date <= c.cutoff
),
final as (
    select
        spine.customer_id,
        spine.cutoff,
        spine.age_years,
        spine.tenure_days,
        spine.history_days,
        spine.income_history_days,
        spine.is_income_pending,
        coalesce(columns(sw.* exclude (cutoff, customer_id)), 0),
        coalesce(iw.n_salary_40d, 0) as n_salary_40d,
        coalesce(iw.n_salary_prev90, 0) as n_salary_prev90,
        coalesce(iw.amount_salary_35d, 0) as amount_salary_35d,
        coalesce(iw.amount_salary_prev90, 0) as amount_salary_prev90,
        coalesce(iw.n_salary_payers_45d, 0) as n_salary_payers_45d,
        coalesce(iw.n_salary_payers_prev90, 0) as n_salary_payers_prev90,
        iw.days_since_last_salary,
        coalesce(iw.n_pension_in_60d, 0) as n_pension_in_60d,
        coalesce(iw.n_pension_in_prev90, 0) as n_pension_in_prev90,
        coalesce(iw.n_benefit_in_60d, 0) as n_benefit_in_60d,
        coalesce(iw.n_benefit_in_prev90, 0) as n_benefit_in_prev90,
        coalesce(iw.amount_income_35d, 0) as amount_income_35d,
        coalesce(iw.amount_income_prev90, 0) as amount_income_prev90,
        ps.payday_shift_days,
        coalesce(ni.n_new_salary_payers_45d, 0) as n_new_salary_payers_45d,
        coalesce(nsp.new_salary_payment_45d, 0) as new_salary_payment_45d,
        coalesce(ni.n_new_pension_payers_60d, 0) as n_new_pension_payers_60d,
        coalesce(ni.n_new_benefit_payers_60d, 0) as n_new_benefit_payers_60d,
        coalesce(no.n_new_dd_mortgage_60d, 0) as n_new_dd_mortgage_60d,
        coalesce(no.n_new_dd_utilities_60d, 0) as n_new_dd_utilities_60d,
        coalesce(no.n_new_dd_council_tax_60d, 0) as n_new_dd_council_tax_60d,
        coalesce(no.n_new_dd_nursery_60d, 0) as n_new_dd_nursery_60d,
        coalesce(no.n_new_dd_rent_60d, 0) as n_new_dd_rent_60d,
        coalesce(no.n_new_dd_other_60d, 0) as n_new_dd_other_60d,
        coalesce(st.n_stopped_outflow_streams, 0) as n_stopped_outflow_streams,
        coalesce(st.n_stopped_rent_streams, 0) as n_stopped_rent_streams,
        coalesce(st.salary_stopped, 0) as salary_stopped,
        coalesce(st.n_stopped_inflow_streams, 0) as n_stopped_inflow_streams,
        coalesce(sp.n_card_30d, 0) as n_card_30d,
        coalesce(sp.amount_card_30d, 0) as amount_card_30d,
        coalesce(sp.amount_card_prev90, 0) as amount_card_prev90,
        coalesce(sp.n_card_prev90, 0) as n_card_prev90,
        coalesce(sp.max_card_amount_30d, 0) as max_card_amount_30d,
        coalesce(sp.n_atm_30d, 0) as n_atm_30d,
        coalesce(sp.amount_atm_30d, 0) as amount_atm_30d,
        coalesce(sp.amount_atm_prev90, 0) as amount_atm_prev90,
        coalesce(sp.amount_out_30d, 0) as amount_out_30d,
        coalesce(sp.amount_out_prev90, 0) as amount_out_prev90,
        coalesce(sp.amount_to_savings_90d, 0) as amount_to_savings_90d,
        coalesce(sp.amount_to_savings_prev90, 0) as amount_to_savings_prev90,
        coalesce(sp.n_deposit_months_90d, 0) as n_deposit_months_90d,
        coalesce(sp.amount_to_savings_90d, 0) - coalesce(sp.amount_to_savings_prev90, 0) as deposit_increase_90d,
        sp.deposit_largest_90d / nullif(sp.amount_to_savings_90d, 0) as deposit_largest_share_90d,
        coalesce(sp.n_foreign_ccy_14d, 0) as n_foreign_ccy_14d,
        coalesce(sp.n_foreign_ccy_30d, 0) as n_foreign_ccy_30d,
        coalesce(sp.n_foreign_country_14d, 0) as n_foreign_country_14d,
        coalesce(sp.n_foreign_inperson_14d, 0) as n_foreign_inperson_14d,
        coalesce(sp.n_foreign_atm_30d, 0) as n_foreign_atm_30d,
        coalesce(sp.n_foreign_days_14d, 0) as n_foreign_days_14d,
        coalesce(sp.n_distinct_foreign_countries_30d, 0) as n_distinct_foreign_countries_30d,
        coalesce(sp.n_distinct_foreign_categories_14d, 0) as n_distinct_foreign_categories_14d,
        coalesce(sp.amount_foreign_30d, 0) as amount_foreign_30d,
        coalesce(sp.n_foreign_prev90, 0) as n_foreign_prev90,
        (coalesce(sp.amount_atm_30d, 0) + 1) / (coalesce(sp.amount_atm_prev90, 0) / 3 + 1) as atm_ratio_30d_vs_prev,
        (coalesce(sp.amount_card_30d, 0) + 1) / (coalesce(sp.amount_card_prev90, 0) / 3 + 1) as card_ratio_30d_vs_prev,
        (coalesce(iw.amount_salary_35d, 0) + 1) / (coalesce(iw.amount_salary_prev90, 0) / 3 + 1) as salary_ratio_35d_vs_prev,
        (coalesce(iw.amount_income_35d, 0) + 1) / (coalesce(iw.amount_income_prev90, 0) / 3 + 1) as income_ratio_35d_vs_prev,
        bw.balance_mean_30d,
        bw.balance_mean_prev90,
        bw.savings_balance_mean_30d,
        bw.savings_balance_mean_prev90,
        bw.balance_mean_30d - bw.balance_mean_prev90 as balance_change_30d_vs_prev,
        bw.savings_balance_mean_30d - bw.savings_balance_mean_prev90 as savings_change_30d_vs_prev,
        coalesce(na.n_new_mortgage_accounts_60d, 0) as n_new_mortgage_accounts_60d,
        coalesce(na.n_new_savings_accounts_60d, 0) as n_new_savings_accounts_60d
    from spine
    left join life_event_signal_windows as sw on sw.customer_id = spine.customer_id and sw.cutoff = spine.cutoff
    left join inflow_windows as iw on iw.customer_id = spine.customer_id and iw.cutoff = spine.cutoff
    left join payday_shift as ps on ps.customer_id = spine.customer_id and ps.cutoff = spine.cutoff
    left join new_inflow_windows as ni on ni.customer_id = spine.customer_id and ni.cutoff = spine.cutoff
    left join new_salary_payments as nsp on nsp.customer_id = spine.customer_id and nsp.cutoff = spine.cutoff
    left join new_outflow_windows as no on no.customer_id = spine.customer_id and no.cutoff = spine.cutoff
    left join stopped_windows as st on st.customer_id = spine.customer_id and st.cutoff = spine.cutoff
    left join spend_windows as sp on sp.customer_id = spine.customer_id and sp.cutoff = spine.cutoff
    left join balance_windows as bw on bw.customer_id = spine.customer_id and bw.cutoff = spine.cutoff
    left join new_accounts as na on na.customer_id = spine.customer_id and na.cutoff = spine.cutoff
)
select * from final
