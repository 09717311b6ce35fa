-- Life-event features (DESIGN section 6 step 5): one row per customer and cut-off, from what the bank saw up to the
-- cut-off. Windowed counts and sums of signal postings (last 14/30/60/90 days vs the 90 before), outgoing direct
-- debits and standing orders that started in the last 60 days by kind, income streams that started or stopped,
-- cash, card and foreign-currency spending, transfers to savings and the balance trend.
-- Reads: transactions_in, balances_in, accounts_in, customers_in (pipelines/features.register_silver), cutoffs(cutoff),
-- life_event_signal_mccs(mcc, signal),
-- life_event_signal_keywords(keyword, signal), life_event_forbidden_mccs(mcc) (pipelines/life_events.register_inputs).
-- Postings with a forbidden (special-category) MCC are removed first: no feature, not even a total, sees them.
with
allowed_postings as (
    select
        t.transaction_id, t.customer_id, t.account_id, t.booking_date, t.channel, t.mcc, t.country, t.currency,
        t.amount_value, t.category, t.stream_key,
        upper(concat_ws(' ', t.description, t.merchant_name)) as posting_text, t.is_own_transfer
    from transactions_in as t
    where t.mcc is null or t.mcc not in (select mcc from life_event_forbidden_mccs)
),
account_products as (
    select account_id, product from accounts_in
),
customer_home as (
    -- the customer's usual currency and country: the most frequent ones of their postings
    select customer_id, mode(currency) as home_currency, mode(country) as home_country,
        min(booking_date) as first_posting_date
    from allowed_postings
    group by customer_id
),
postings as (
    select
        p.transaction_id, p.customer_id, p.booking_date, p.channel, p.mcc, p.country, p.category, p.stream_key,
        p.amount_value, p.posting_text,
        coalesce(a.product, 'current') as product,
        (p.amount_value < 0 and p.currency <> h.home_currency) as is_foreign_ccy,
        (p.amount_value < 0 and p.country is not null and p.country <> h.home_country) as is_foreign_country,
        (p.channel = 'atm' or p.category in ('eating_out', 'transport', 'groceries')) as is_inperson,
        -- money between the customer's own accounts (pipelines/features.py): never income, never a new bill
        (p.is_own_transfer or (p.channel in ('transfer_in', 'transfer_out') and p.counterparty_is_own))
            as is_own_transfer,
        (p.amount_value < 0 and p.channel = 'transfer_out' and p.counterparty_is_own
            and p.posting_text like '%SAVING%') as is_to_savings
    from (
        select ap.*,
            (ap.stream_key is null or ap.posting_text like '%TRANSFER TO %' or ap.posting_text like '%TRANSFER FROM %')
                as counterparty_is_own
        from allowed_postings as ap
    ) as p
    left join account_products as a on a.account_id = p.account_id
    left join customer_home as h on h.customer_id = p.customer_id
),
recent_postings as (
    -- every posting in the 180 days up to each cut-off, with its age in days
    select c.cutoff, p.*, c.cutoff - p.booking_date as age_days
    from postings as p
    join cutoffs as c on p.booking_date <= c.cutoff and p.booking_date > c.cutoff - 180
),
tagged as (
    -- signal postings: money out at a signal merchant category, or a posting whose text names the signal
    select p.cutoff, p.customer_id, p.age_days, p.amount_value, s.signal
    from recent_postings as p
    join life_event_signal_mccs as s on s.mcc = p.mcc
    where p.amount_value < 0
    union all
    select p.cutoff, p.customer_id, p.age_days, p.amount_value, k.signal
    from recent_postings as p
    join life_event_signal_keywords as k on contains(p.posting_text, k.keyword)
    where (k.signal in ('redundancy', 'universal_credit', 'child_benefit', 'pension')) = (p.amount_value > 0)
),
signal_windows as (
    select t.cutoff, t.customer_id,
        count(*) filter (where t.signal = 'removals' and t.age_days < 14) as n_removals_14d,
        count(*) filter (where t.signal = 'removals' and t.age_days < 30) as n_removals_30d,
        count(*) filter (where t.signal = 'removals' and t.age_days < 60) as n_removals_60d,
        count(*) filter (where t.signal = 'removals' and t.age_days < 90) as n_removals_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'removals' and t.age_days < 90), 0) as amount_removals_90d,
        count(*) filter (where t.signal = 'removals' and t.age_days >= 90) as n_removals_prev90,
        count(*) filter (where t.signal = 'furniture' and t.age_days < 14) as n_furniture_14d,
        count(*) filter (where t.signal = 'furniture' and t.age_days < 30) as n_furniture_30d,
        count(*) filter (where t.signal = 'furniture' and t.age_days < 60) as n_furniture_60d,
        count(*) filter (where t.signal = 'furniture' and t.age_days < 90) as n_furniture_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'furniture' and t.age_days < 90), 0) as amount_furniture_90d,
        count(*) filter (where t.signal = 'furniture' and t.age_days >= 90) as n_furniture_prev90,
        count(*) filter (where t.signal = 'home_diy' and t.age_days < 14) as n_home_diy_14d,
        count(*) filter (where t.signal = 'home_diy' and t.age_days < 30) as n_home_diy_30d,
        count(*) filter (where t.signal = 'home_diy' and t.age_days < 60) as n_home_diy_60d,
        count(*) filter (where t.signal = 'home_diy' and t.age_days < 90) as n_home_diy_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'home_diy' and t.age_days < 90), 0) as amount_home_diy_90d,
        count(*) filter (where t.signal = 'home_diy' and t.age_days >= 90) as n_home_diy_prev90,
        count(*) filter (where t.signal = 'appliances' and t.age_days < 14) as n_appliances_14d,
        count(*) filter (where t.signal = 'appliances' and t.age_days < 30) as n_appliances_30d,
        count(*) filter (where t.signal = 'appliances' and t.age_days < 60) as n_appliances_60d,
        count(*) filter (where t.signal = 'appliances' and t.age_days < 90) as n_appliances_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'appliances' and t.age_days < 90), 0) as amount_appliances_90d,
        count(*) filter (where t.signal = 'appliances' and t.age_days >= 90) as n_appliances_prev90,
        count(*) filter (where t.signal = 'surveyor' and t.age_days < 14) as n_surveyor_14d,
        count(*) filter (where t.signal = 'surveyor' and t.age_days < 30) as n_surveyor_30d,
        count(*) filter (where t.signal = 'surveyor' and t.age_days < 60) as n_surveyor_60d,
        count(*) filter (where t.signal = 'surveyor' and t.age_days < 90) as n_surveyor_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'surveyor' and t.age_days < 90), 0) as amount_surveyor_90d,
        count(*) filter (where t.signal = 'surveyor' and t.age_days >= 90) as n_surveyor_prev90,
        count(*) filter (where t.signal = 'baby' and t.age_days < 14) as n_baby_14d,
        count(*) filter (where t.signal = 'baby' and t.age_days < 30) as n_baby_30d,
        count(*) filter (where t.signal = 'baby' and t.age_days < 60) as n_baby_60d,
        count(*) filter (where t.signal = 'baby' and t.age_days < 90) as n_baby_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'baby' and t.age_days < 90), 0) as amount_baby_90d,
        count(*) filter (where t.signal = 'baby' and t.age_days >= 90) as n_baby_prev90,
        count(*) filter (where t.signal = 'toys' and t.age_days < 14) as n_toys_14d,
        count(*) filter (where t.signal = 'toys' and t.age_days < 30) as n_toys_30d,
        count(*) filter (where t.signal = 'toys' and t.age_days < 60) as n_toys_60d,
        count(*) filter (where t.signal = 'toys' and t.age_days < 90) as n_toys_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'toys' and t.age_days < 90), 0) as amount_toys_90d,
        count(*) filter (where t.signal = 'toys' and t.age_days >= 90) as n_toys_prev90,
        count(*) filter (where t.signal = 'jewellery' and t.age_days < 14) as n_jewellery_14d,
        count(*) filter (where t.signal = 'jewellery' and t.age_days < 30) as n_jewellery_30d,
        count(*) filter (where t.signal = 'jewellery' and t.age_days < 60) as n_jewellery_60d,
        count(*) filter (where t.signal = 'jewellery' and t.age_days < 90) as n_jewellery_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'jewellery' and t.age_days < 90), 0) as amount_jewellery_90d,
        count(*) filter (where t.signal = 'jewellery' and t.age_days >= 90) as n_jewellery_prev90,
        count(*) filter (where t.signal = 'wedding_venue' and t.age_days < 14) as n_wedding_venue_14d,
        count(*) filter (where t.signal = 'wedding_venue' and t.age_days < 30) as n_wedding_venue_30d,
        count(*) filter (where t.signal = 'wedding_venue' and t.age_days < 60) as n_wedding_venue_60d,
        count(*) filter (where t.signal = 'wedding_venue' and t.age_days < 90) as n_wedding_venue_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'wedding_venue' and t.age_days < 90), 0) as amount_wedding_venue_90d,
        count(*) filter (where t.signal = 'wedding_venue' and t.age_days >= 90) as n_wedding_venue_prev90,
        count(*) filter (where t.signal = 'caterer' and t.age_days < 14) as n_caterer_14d,
        count(*) filter (where t.signal = 'caterer' and t.age_days < 30) as n_caterer_30d,
        count(*) filter (where t.signal = 'caterer' and t.age_days < 60) as n_caterer_60d,
        count(*) filter (where t.signal = 'caterer' and t.age_days < 90) as n_caterer_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'caterer' and t.age_days < 90), 0) as amount_caterer_90d,
        count(*) filter (where t.signal = 'caterer' and t.age_days >= 90) as n_caterer_prev90,
        count(*) filter (where t.signal = 'bridal' and t.age_days < 14) as n_bridal_14d,
        count(*) filter (where t.signal = 'bridal' and t.age_days < 30) as n_bridal_30d,
        count(*) filter (where t.signal = 'bridal' and t.age_days < 60) as n_bridal_60d,
        count(*) filter (where t.signal = 'bridal' and t.age_days < 90) as n_bridal_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'bridal' and t.age_days < 90), 0) as amount_bridal_90d,
        count(*) filter (where t.signal = 'bridal' and t.age_days >= 90) as n_bridal_prev90,
        count(*) filter (where t.signal = 'airline' and t.age_days < 14) as n_airline_14d,
        count(*) filter (where t.signal = 'airline' and t.age_days < 30) as n_airline_30d,
        count(*) filter (where t.signal = 'airline' and t.age_days < 60) as n_airline_60d,
        count(*) filter (where t.signal = 'airline' and t.age_days < 90) as n_airline_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'airline' and t.age_days < 90), 0) as amount_airline_90d,
        count(*) filter (where t.signal = 'airline' and t.age_days >= 90) as n_airline_prev90,
        count(*) filter (where t.signal = 'hotel' and t.age_days < 14) as n_hotel_14d,
        count(*) filter (where t.signal = 'hotel' and t.age_days < 30) as n_hotel_30d,
        count(*) filter (where t.signal = 'hotel' and t.age_days < 60) as n_hotel_60d,
        count(*) filter (where t.signal = 'hotel' and t.age_days < 90) as n_hotel_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'hotel' and t.age_days < 90), 0) as amount_hotel_90d,
        count(*) filter (where t.signal = 'hotel' and t.age_days >= 90) as n_hotel_prev90,
        count(*) filter (where t.signal = 'travel_agency' and t.age_days < 14) as n_travel_agency_14d,
        count(*) filter (where t.signal = 'travel_agency' and t.age_days < 30) as n_travel_agency_30d,
        count(*) filter (where t.signal = 'travel_agency' and t.age_days < 60) as n_travel_agency_60d,
        count(*) filter (where t.signal = 'travel_agency' and t.age_days < 90) as n_travel_agency_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'travel_agency' and t.age_days < 90), 0) as amount_travel_agency_90d,
        count(*) filter (where t.signal = 'travel_agency' and t.age_days >= 90) as n_travel_agency_prev90,
        count(*) filter (where t.signal = 'nursery' and t.age_days < 14) as n_nursery_14d,
        count(*) filter (where t.signal = 'nursery' and t.age_days < 30) as n_nursery_30d,
        count(*) filter (where t.signal = 'nursery' and t.age_days < 60) as n_nursery_60d,
        count(*) filter (where t.signal = 'nursery' and t.age_days < 90) as n_nursery_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'nursery' and t.age_days < 90), 0) as amount_nursery_90d,
        count(*) filter (where t.signal = 'nursery' and t.age_days >= 90) as n_nursery_prev90,
        count(*) filter (where t.signal = 'solicitor' and t.age_days < 14) as n_solicitor_14d,
        count(*) filter (where t.signal = 'solicitor' and t.age_days < 30) as n_solicitor_30d,
        count(*) filter (where t.signal = 'solicitor' and t.age_days < 60) as n_solicitor_60d,
        count(*) filter (where t.signal = 'solicitor' and t.age_days < 90) as n_solicitor_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'solicitor' and t.age_days < 90), 0) as amount_solicitor_90d,
        count(*) filter (where t.signal = 'solicitor' and t.age_days >= 90) as n_solicitor_prev90,
        count(*) filter (where t.signal = 'tenancy_deposit' and t.age_days < 14) as n_tenancy_deposit_14d,
        count(*) filter (where t.signal = 'tenancy_deposit' and t.age_days < 30) as n_tenancy_deposit_30d,
        count(*) filter (where t.signal = 'tenancy_deposit' and t.age_days < 60) as n_tenancy_deposit_60d,
        count(*) filter (where t.signal = 'tenancy_deposit' and t.age_days < 90) as n_tenancy_deposit_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'tenancy_deposit' and t.age_days < 90), 0) as amount_tenancy_deposit_90d,
        count(*) filter (where t.signal = 'tenancy_deposit' and t.age_days >= 90) as n_tenancy_deposit_prev90,
        count(*) filter (where t.signal = 'mortgage_broker' and t.age_days < 14) as n_mortgage_broker_14d,
        count(*) filter (where t.signal = 'mortgage_broker' and t.age_days < 30) as n_mortgage_broker_30d,
        count(*) filter (where t.signal = 'mortgage_broker' and t.age_days < 60) as n_mortgage_broker_60d,
        count(*) filter (where t.signal = 'mortgage_broker' and t.age_days < 90) as n_mortgage_broker_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'mortgage_broker' and t.age_days < 90), 0) as amount_mortgage_broker_90d,
        count(*) filter (where t.signal = 'mortgage_broker' and t.age_days >= 90) as n_mortgage_broker_prev90,
        count(*) filter (where t.signal = 'mortgage' and t.age_days < 14) as n_mortgage_14d,
        count(*) filter (where t.signal = 'mortgage' and t.age_days < 30) as n_mortgage_30d,
        count(*) filter (where t.signal = 'mortgage' and t.age_days < 60) as n_mortgage_60d,
        count(*) filter (where t.signal = 'mortgage' and t.age_days < 90) as n_mortgage_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'mortgage' and t.age_days < 90), 0) as amount_mortgage_90d,
        count(*) filter (where t.signal = 'mortgage' and t.age_days >= 90) as n_mortgage_prev90,
        count(*) filter (where t.signal = 'redundancy' and t.age_days < 14) as n_redundancy_14d,
        count(*) filter (where t.signal = 'redundancy' and t.age_days < 30) as n_redundancy_30d,
        count(*) filter (where t.signal = 'redundancy' and t.age_days < 60) as n_redundancy_60d,
        count(*) filter (where t.signal = 'redundancy' and t.age_days < 90) as n_redundancy_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'redundancy' and t.age_days < 90), 0) as amount_redundancy_90d,
        count(*) filter (where t.signal = 'redundancy' and t.age_days >= 90) as n_redundancy_prev90,
        count(*) filter (where t.signal = 'universal_credit' and t.age_days < 14) as n_universal_credit_14d,
        count(*) filter (where t.signal = 'universal_credit' and t.age_days < 30) as n_universal_credit_30d,
        count(*) filter (where t.signal = 'universal_credit' and t.age_days < 60) as n_universal_credit_60d,
        count(*) filter (where t.signal = 'universal_credit' and t.age_days < 90) as n_universal_credit_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'universal_credit' and t.age_days < 90), 0) as amount_universal_credit_90d,
        count(*) filter (where t.signal = 'universal_credit' and t.age_days >= 90) as n_universal_credit_prev90,
        count(*) filter (where t.signal = 'child_benefit' and t.age_days < 14) as n_child_benefit_14d,
        count(*) filter (where t.signal = 'child_benefit' and t.age_days < 30) as n_child_benefit_30d,
        count(*) filter (where t.signal = 'child_benefit' and t.age_days < 60) as n_child_benefit_60d,
        count(*) filter (where t.signal = 'child_benefit' and t.age_days < 90) as n_child_benefit_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'child_benefit' and t.age_days < 90), 0) as amount_child_benefit_90d,
        count(*) filter (where t.signal = 'child_benefit' and t.age_days >= 90) as n_child_benefit_prev90,
        count(*) filter (where t.signal = 'pension' and t.age_days < 14) as n_pension_14d,
        count(*) filter (where t.signal = 'pension' and t.age_days < 30) as n_pension_30d,
        count(*) filter (where t.signal = 'pension' and t.age_days < 60) as n_pension_60d,
        count(*) filter (where t.signal = 'pension' and t.age_days < 90) as n_pension_90d,
        coalesce(sum(abs(t.amount_value)) filter (where t.signal = 'pension' and t.age_days < 90), 0) as amount_pension_90d,
        count(*) filter (where t.signal = 'pension' and t.age_days >= 90) as n_pension_prev90
    from tagged as t
    group by t.cutoff, t.customer_id
),
inflows as (
    -- income postings by kind: salary, pension (a credit naming a pension) and other benefits
    select customer_id, booking_date, amount_value, stream_key,
        case when posting_text like '%PENSION%' then 'pension'
             when channel = 'salary' then 'salary'
             else 'benefit' end as kind
    from postings
    where amount_value > 0 and not is_own_transfer
        and (channel in ('salary', 'benefit') or posting_text like '%PENSION%')
),
inflow_windows as (
    select i.cutoff, i.customer_id,
        count(*) filter (where i.kind = 'salary' and i.age_days < 40) as n_salary_40d,
        count(*) filter (where i.kind = 'salary' and i.age_days between 40 and 129) as n_salary_prev90,
        coalesce(sum(i.amount_value) filter (where i.kind = 'salary' and i.age_days < 35), 0) as amount_salary_35d,
        coalesce(sum(i.amount_value) filter (where i.kind = 'salary' and i.age_days between 35 and 124), 0) as amount_salary_prev90,
        count(distinct i.stream_key) filter (where i.kind = 'salary' and i.age_days < 45) as n_salary_payers_45d,
        count(distinct i.stream_key) filter (where i.kind = 'salary' and i.age_days between 45 and 134) as n_salary_payers_prev90,
        min(i.age_days) filter (where i.kind = 'salary') as days_since_last_salary,
        count(*) filter (where i.kind = 'pension' and i.age_days < 60) as n_pension_in_60d,
        count(*) filter (where i.kind = 'pension' and i.age_days between 60 and 149) as n_pension_in_prev90,
        count(*) filter (where i.kind = 'benefit' and i.age_days < 60) as n_benefit_in_60d,
        count(*) filter (where i.kind = 'benefit' and i.age_days between 60 and 149) as n_benefit_in_prev90,
        coalesce(sum(i.amount_value) filter (where i.age_days < 35), 0) as amount_income_35d,
        coalesce(sum(i.amount_value) filter (where i.age_days between 35 and 124), 0) as amount_income_prev90
    from (select c.cutoff, i.*, c.cutoff - i.booking_date as age_days
          from inflows as i join cutoffs as c on i.booking_date <= c.cutoff and i.booking_date > c.cutoff - 180) as i
    group by i.cutoff, i.customer_id
),
payday_shift as (
    -- days between the day of month of the latest salary and the one before it (a new payday)
    select cutoff, customer_id,
        abs(day(max(booking_date)) - day(max(booking_date, 2)[2])) as payday_shift_days
    from (select c.cutoff, i.customer_id, i.booking_date
          from inflows as i join cutoffs as c on i.booking_date <= c.cutoff and i.booking_date > c.cutoff - 100
          where i.kind = 'salary') as s
    group by cutoff, customer_id
    having count(*) >= 2
),
outflow_streams as (
    -- outgoing direct debits and standing orders, with the kind of what they pay
    select p.customer_id, p.stream_key, p.booking_date,
        case when p.mcc = '6012' or p.posting_text like '%MORTGAGE%' then 'mortgage'
             when p.mcc in ('4900', '4814', '4899') then 'utilities'
             when p.mcc = '9311' or p.posting_text like '%COUNCIL TAX%' then 'council_tax'
             when p.mcc = '8351' then 'nursery'
             when p.channel = 'standing_order' and p.posting_text like '%RENT%' then 'rent'
             else 'other' end as kind
    from postings as p
    where p.amount_value < 0 and p.channel in ('direct_debit', 'standing_order') and not p.is_own_transfer
),
stream_first as (
    -- the first posting of each payer or payee (a new stream starts then); streams seen at the very start of the
    -- customer's history are not new to them, only new to the data, and are left out
    select s.customer_id, s.stream_key, s.kind, 'out' as direction, min(s.booking_date) as first_date
    from outflow_streams as s group by s.customer_id, s.stream_key, s.kind
    union all
    select i.customer_id, i.stream_key, i.kind, 'in' as direction, min(i.booking_date) as first_date
    from inflows as i group by i.customer_id, i.stream_key, i.kind
),
new_streams as (
    select f.customer_id, f.stream_key, f.kind, f.direction, f.first_date
    from stream_first as f
    join customer_home as h on h.customer_id = f.customer_id
    where f.first_date - h.first_posting_date >= 60
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
    -- per stream and cut-off: occurrences in the 150 days before it and the latest one
    select c.cutoff, s.customer_id, s.stream_key, s.kind, s.direction,
        count(*) as n_occurrences, max(s.booking_date) as last_date
    from (select customer_id, stream_key, kind, 'out' as direction, booking_date from outflow_streams
          union all
          select customer_id, stream_key, kind, 'in' as direction, booking_date from inflows) as s
    join cutoffs as c on s.booking_date <= c.cutoff and s.booking_date > c.cutoff - 150
    group by c.cutoff, s.customer_id, s.stream_key, s.kind, s.direction
),
stopped_streams as (
    -- a regular stream (3+ occurrences) silent for the last 40 days: stopped
    select cutoff, customer_id, stream_key, kind, direction
    from stream_activity
    where n_occurrences >= 3 and cutoff - last_date >= 40
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
        count(*) filter (where p.channel = 'card' and p.age_days < 30) as n_card_30d,
        coalesce(sum(-p.amount_value) filter (where p.channel = 'card' and p.age_days < 30), 0) as amount_card_30d,
        coalesce(sum(-p.amount_value) filter (where p.channel = 'card' and p.age_days between 30 and 119), 0) as amount_card_prev90,
        count(*) filter (where p.channel = 'card' and p.age_days between 30 and 119) as n_card_prev90,
        coalesce(max(-p.amount_value) filter (where p.channel = 'card' and p.age_days < 30), 0) as max_card_amount_30d,
        count(*) filter (where p.channel = 'atm' and p.age_days < 30) as n_atm_30d,
        coalesce(sum(-p.amount_value) filter (where p.channel = 'atm' and p.age_days < 30), 0) as amount_atm_30d,
        coalesce(sum(-p.amount_value) filter (where p.channel = 'atm' and p.age_days between 30 and 119), 0) as amount_atm_prev90,
        coalesce(sum(-p.amount_value) filter (where p.amount_value < 0 and p.age_days < 30 and not p.is_own_transfer), 0) as amount_out_30d,
        coalesce(sum(-p.amount_value) filter (where p.amount_value < 0 and p.age_days between 30 and 119 and not p.is_own_transfer), 0) as amount_out_prev90,
        coalesce(sum(-p.amount_value) filter (where p.is_to_savings and p.age_days < 90), 0) as amount_to_savings_90d,
        coalesce(sum(-p.amount_value) filter (where p.is_to_savings and p.age_days >= 90), 0) as amount_to_savings_prev90,
        -- a deposit saved up month by month, or one lump sum parked in savings: in how many of the last three
        -- 30-day windows money went to savings, and the largest single transfer of the 90 days (named deposit_*:
        -- what a credit offer's corroboration reads, not a model feature: no model's signal group matches them)
        count(distinct p.age_days // 30) filter (where p.is_to_savings and p.age_days < 90) as n_deposit_months_90d,
        max(-p.amount_value) filter (where p.is_to_savings and p.age_days < 90) as deposit_largest_90d,
        count(*) filter (where p.is_foreign_ccy and p.age_days < 14) as n_foreign_ccy_14d,
        count(*) filter (where p.is_foreign_ccy and p.age_days < 30) as n_foreign_ccy_30d,
        count(*) filter (where p.is_foreign_country and p.age_days < 14) as n_foreign_country_14d,
        count(*) filter (where p.is_foreign_country and p.is_inperson and p.age_days < 14) as n_foreign_inperson_14d,
        count(*) filter (where p.is_foreign_country and p.channel = 'atm' and p.age_days < 30) as n_foreign_atm_30d,
        count(distinct p.booking_date) filter (where (p.is_foreign_country or p.is_foreign_ccy) and p.age_days < 14) as n_foreign_days_14d,
        count(distinct p.country) filter (where p.is_foreign_country and p.age_days < 30) as n_distinct_foreign_countries_30d,
        count(distinct p.category) filter (where (p.is_foreign_country or p.is_foreign_ccy) and p.age_days < 14) as n_distinct_foreign_categories_14d,
        coalesce(sum(-p.amount_value) filter (where (p.is_foreign_country or p.is_foreign_ccy) and p.age_days < 30), 0) as amount_foreign_30d,
        count(*) filter (where (p.is_foreign_country or p.is_foreign_ccy) and p.age_days >= 90) as n_foreign_prev90
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
          from customer_balances as b join cutoffs as c on b.as_of <= c.cutoff and b.as_of > c.cutoff - 120) as b
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
        c.cutoff - h.first_posting_date as history_days
    from customers_in as cu
    cross join cutoffs as c
    left join customer_home as h on h.customer_id = cu.customer_id
    where h.first_posting_date <= c.cutoff
),
final as (
    select
        spine.customer_id,
        spine.cutoff,
        spine.age_years,
        spine.tenure_days,
        spine.history_days,
        coalesce(sw.n_removals_14d, 0) as n_removals_14d,
        coalesce(sw.n_removals_30d, 0) as n_removals_30d,
        coalesce(sw.n_removals_60d, 0) as n_removals_60d,
        coalesce(sw.n_removals_90d, 0) as n_removals_90d,
        coalesce(sw.amount_removals_90d, 0) as amount_removals_90d,
        coalesce(sw.n_removals_prev90, 0) as n_removals_prev90,
        coalesce(sw.n_furniture_14d, 0) as n_furniture_14d,
        coalesce(sw.n_furniture_30d, 0) as n_furniture_30d,
        coalesce(sw.n_furniture_60d, 0) as n_furniture_60d,
        coalesce(sw.n_furniture_90d, 0) as n_furniture_90d,
        coalesce(sw.amount_furniture_90d, 0) as amount_furniture_90d,
        coalesce(sw.n_furniture_prev90, 0) as n_furniture_prev90,
        coalesce(sw.n_home_diy_14d, 0) as n_home_diy_14d,
        coalesce(sw.n_home_diy_30d, 0) as n_home_diy_30d,
        coalesce(sw.n_home_diy_60d, 0) as n_home_diy_60d,
        coalesce(sw.n_home_diy_90d, 0) as n_home_diy_90d,
        coalesce(sw.amount_home_diy_90d, 0) as amount_home_diy_90d,
        coalesce(sw.n_home_diy_prev90, 0) as n_home_diy_prev90,
        coalesce(sw.n_appliances_14d, 0) as n_appliances_14d,
        coalesce(sw.n_appliances_30d, 0) as n_appliances_30d,
        coalesce(sw.n_appliances_60d, 0) as n_appliances_60d,
        coalesce(sw.n_appliances_90d, 0) as n_appliances_90d,
        coalesce(sw.amount_appliances_90d, 0) as amount_appliances_90d,
        coalesce(sw.n_appliances_prev90, 0) as n_appliances_prev90,
        coalesce(sw.n_surveyor_14d, 0) as n_surveyor_14d,
        coalesce(sw.n_surveyor_30d, 0) as n_surveyor_30d,
        coalesce(sw.n_surveyor_60d, 0) as n_surveyor_60d,
        coalesce(sw.n_surveyor_90d, 0) as n_surveyor_90d,
        coalesce(sw.amount_surveyor_90d, 0) as amount_surveyor_90d,
        coalesce(sw.n_surveyor_prev90, 0) as n_surveyor_prev90,
        coalesce(sw.n_baby_14d, 0) as n_baby_14d,
        coalesce(sw.n_baby_30d, 0) as n_baby_30d,
        coalesce(sw.n_baby_60d, 0) as n_baby_60d,
        coalesce(sw.n_baby_90d, 0) as n_baby_90d,
        coalesce(sw.amount_baby_90d, 0) as amount_baby_90d,
        coalesce(sw.n_baby_prev90, 0) as n_baby_prev90,
        coalesce(sw.n_toys_14d, 0) as n_toys_14d,
        coalesce(sw.n_toys_30d, 0) as n_toys_30d,
        coalesce(sw.n_toys_60d, 0) as n_toys_60d,
        coalesce(sw.n_toys_90d, 0) as n_toys_90d,
        coalesce(sw.amount_toys_90d, 0) as amount_toys_90d,
        coalesce(sw.n_toys_prev90, 0) as n_toys_prev90,
        coalesce(sw.n_jewellery_14d, 0) as n_jewellery_14d,
        coalesce(sw.n_jewellery_30d, 0) as n_jewellery_30d,
        coalesce(sw.n_jewellery_60d, 0) as n_jewellery_60d,
        coalesce(sw.n_jewellery_90d, 0) as n_jewellery_90d,
        coalesce(sw.amount_jewellery_90d, 0) as amount_jewellery_90d,
        coalesce(sw.n_jewellery_prev90, 0) as n_jewellery_prev90,
        coalesce(sw.n_wedding_venue_14d, 0) as n_wedding_venue_14d,
        coalesce(sw.n_wedding_venue_30d, 0) as n_wedding_venue_30d,
        coalesce(sw.n_wedding_venue_60d, 0) as n_wedding_venue_60d,
        coalesce(sw.n_wedding_venue_90d, 0) as n_wedding_venue_90d,
        coalesce(sw.amount_wedding_venue_90d, 0) as amount_wedding_venue_90d,
        coalesce(sw.n_wedding_venue_prev90, 0) as n_wedding_venue_prev90,
        coalesce(sw.n_caterer_14d, 0) as n_caterer_14d,
        coalesce(sw.n_caterer_30d, 0) as n_caterer_30d,
        coalesce(sw.n_caterer_60d, 0) as n_caterer_60d,
        coalesce(sw.n_caterer_90d, 0) as n_caterer_90d,
        coalesce(sw.amount_caterer_90d, 0) as amount_caterer_90d,
        coalesce(sw.n_caterer_prev90, 0) as n_caterer_prev90,
        coalesce(sw.n_bridal_14d, 0) as n_bridal_14d,
        coalesce(sw.n_bridal_30d, 0) as n_bridal_30d,
        coalesce(sw.n_bridal_60d, 0) as n_bridal_60d,
        coalesce(sw.n_bridal_90d, 0) as n_bridal_90d,
        coalesce(sw.amount_bridal_90d, 0) as amount_bridal_90d,
        coalesce(sw.n_bridal_prev90, 0) as n_bridal_prev90,
        coalesce(sw.n_airline_14d, 0) as n_airline_14d,
        coalesce(sw.n_airline_30d, 0) as n_airline_30d,
        coalesce(sw.n_airline_60d, 0) as n_airline_60d,
        coalesce(sw.n_airline_90d, 0) as n_airline_90d,
        coalesce(sw.amount_airline_90d, 0) as amount_airline_90d,
        coalesce(sw.n_airline_prev90, 0) as n_airline_prev90,
        coalesce(sw.n_hotel_14d, 0) as n_hotel_14d,
        coalesce(sw.n_hotel_30d, 0) as n_hotel_30d,
        coalesce(sw.n_hotel_60d, 0) as n_hotel_60d,
        coalesce(sw.n_hotel_90d, 0) as n_hotel_90d,
        coalesce(sw.amount_hotel_90d, 0) as amount_hotel_90d,
        coalesce(sw.n_hotel_prev90, 0) as n_hotel_prev90,
        coalesce(sw.n_travel_agency_14d, 0) as n_travel_agency_14d,
        coalesce(sw.n_travel_agency_30d, 0) as n_travel_agency_30d,
        coalesce(sw.n_travel_agency_60d, 0) as n_travel_agency_60d,
        coalesce(sw.n_travel_agency_90d, 0) as n_travel_agency_90d,
        coalesce(sw.amount_travel_agency_90d, 0) as amount_travel_agency_90d,
        coalesce(sw.n_travel_agency_prev90, 0) as n_travel_agency_prev90,
        coalesce(sw.n_nursery_14d, 0) as n_nursery_14d,
        coalesce(sw.n_nursery_30d, 0) as n_nursery_30d,
        coalesce(sw.n_nursery_60d, 0) as n_nursery_60d,
        coalesce(sw.n_nursery_90d, 0) as n_nursery_90d,
        coalesce(sw.amount_nursery_90d, 0) as amount_nursery_90d,
        coalesce(sw.n_nursery_prev90, 0) as n_nursery_prev90,
        coalesce(sw.n_solicitor_14d, 0) as n_solicitor_14d,
        coalesce(sw.n_solicitor_30d, 0) as n_solicitor_30d,
        coalesce(sw.n_solicitor_60d, 0) as n_solicitor_60d,
        coalesce(sw.n_solicitor_90d, 0) as n_solicitor_90d,
        coalesce(sw.amount_solicitor_90d, 0) as amount_solicitor_90d,
        coalesce(sw.n_solicitor_prev90, 0) as n_solicitor_prev90,
        coalesce(sw.n_tenancy_deposit_14d, 0) as n_tenancy_deposit_14d,
        coalesce(sw.n_tenancy_deposit_30d, 0) as n_tenancy_deposit_30d,
        coalesce(sw.n_tenancy_deposit_60d, 0) as n_tenancy_deposit_60d,
        coalesce(sw.n_tenancy_deposit_90d, 0) as n_tenancy_deposit_90d,
        coalesce(sw.amount_tenancy_deposit_90d, 0) as amount_tenancy_deposit_90d,
        coalesce(sw.n_tenancy_deposit_prev90, 0) as n_tenancy_deposit_prev90,
        coalesce(sw.n_mortgage_broker_14d, 0) as n_mortgage_broker_14d,
        coalesce(sw.n_mortgage_broker_30d, 0) as n_mortgage_broker_30d,
        coalesce(sw.n_mortgage_broker_60d, 0) as n_mortgage_broker_60d,
        coalesce(sw.n_mortgage_broker_90d, 0) as n_mortgage_broker_90d,
        coalesce(sw.amount_mortgage_broker_90d, 0) as amount_mortgage_broker_90d,
        coalesce(sw.n_mortgage_broker_prev90, 0) as n_mortgage_broker_prev90,
        coalesce(sw.n_mortgage_14d, 0) as n_mortgage_14d,
        coalesce(sw.n_mortgage_30d, 0) as n_mortgage_30d,
        coalesce(sw.n_mortgage_60d, 0) as n_mortgage_60d,
        coalesce(sw.n_mortgage_90d, 0) as n_mortgage_90d,
        coalesce(sw.amount_mortgage_90d, 0) as amount_mortgage_90d,
        coalesce(sw.n_mortgage_prev90, 0) as n_mortgage_prev90,
        coalesce(sw.n_redundancy_14d, 0) as n_redundancy_14d,
        coalesce(sw.n_redundancy_30d, 0) as n_redundancy_30d,
        coalesce(sw.n_redundancy_60d, 0) as n_redundancy_60d,
        coalesce(sw.n_redundancy_90d, 0) as n_redundancy_90d,
        coalesce(sw.amount_redundancy_90d, 0) as amount_redundancy_90d,
        coalesce(sw.n_redundancy_prev90, 0) as n_redundancy_prev90,
        coalesce(sw.n_universal_credit_14d, 0) as n_universal_credit_14d,
        coalesce(sw.n_universal_credit_30d, 0) as n_universal_credit_30d,
        coalesce(sw.n_universal_credit_60d, 0) as n_universal_credit_60d,
        coalesce(sw.n_universal_credit_90d, 0) as n_universal_credit_90d,
        coalesce(sw.amount_universal_credit_90d, 0) as amount_universal_credit_90d,
        coalesce(sw.n_universal_credit_prev90, 0) as n_universal_credit_prev90,
        coalesce(sw.n_child_benefit_14d, 0) as n_child_benefit_14d,
        coalesce(sw.n_child_benefit_30d, 0) as n_child_benefit_30d,
        coalesce(sw.n_child_benefit_60d, 0) as n_child_benefit_60d,
        coalesce(sw.n_child_benefit_90d, 0) as n_child_benefit_90d,
        coalesce(sw.amount_child_benefit_90d, 0) as amount_child_benefit_90d,
        coalesce(sw.n_child_benefit_prev90, 0) as n_child_benefit_prev90,
        coalesce(sw.n_pension_14d, 0) as n_pension_14d,
        coalesce(sw.n_pension_30d, 0) as n_pension_30d,
        coalesce(sw.n_pension_60d, 0) as n_pension_60d,
        coalesce(sw.n_pension_90d, 0) as n_pension_90d,
        coalesce(sw.amount_pension_90d, 0) as amount_pension_90d,
        coalesce(sw.n_pension_prev90, 0) as n_pension_prev90,
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
    left join signal_windows as sw on sw.customer_id = spine.customer_id and sw.cutoff = spine.cutoff
    left join inflow_windows as iw on iw.customer_id = spine.customer_id and iw.cutoff = spine.cutoff
    left join payday_shift as ps on ps.customer_id = spine.customer_id and ps.cutoff = spine.cutoff
    left join new_inflow_windows as ni on ni.customer_id = spine.customer_id and ni.cutoff = spine.cutoff
    left join new_outflow_windows as no on no.customer_id = spine.customer_id and no.cutoff = spine.cutoff
    left join stopped_windows as st on st.customer_id = spine.customer_id and st.cutoff = spine.cutoff
    left join spend_windows as sp on sp.customer_id = spine.customer_id and sp.cutoff = spine.cutoff
    left join balance_windows as bw on bw.customer_id = spine.customer_id and bw.cutoff = spine.cutoff
    left join new_accounts as na on na.customer_id = spine.customer_id and na.cutoff = spine.cutoff
)
select * from final
