-- The start of the history every income claim is judged on, per customer and cut-off (docs/forecasting.md, "Short
-- histories" and "A second current account"): the latest of the first posting of each source of the customer's
-- data (core, open banking: customer_state, the start of a source the new-stream rule of sql/features_life_events.sql
-- reads) and the first day of data of each of the customer's current accounts, here or connected through open
-- banking (account_state: a posting or a reported balance), that started by the cut-off and could hold the
-- customer's income there (config/forecast.yaml income_history):
-- - money that could be an income has arrived on it by the cut-off (account_state.first_income_day: a credit on one
--   of `income_channels`, not an own-account transfer): a salary paid into an account opened (or connected) 30 days
--   ago is not a stream there yet, and its earlier payments, made elsewhere, are not in the data, however long the
--   customer's other accounts have been seen;
-- - or the customer has no steady income on the cut-off (income_payers.is_steady, sql/features_income_payers.sql):
--   a salary that stopped on the old account may be paid into the new one under a name or channel that does not
--   read as income.
-- A second current account beside a steady income that stays where it was (funded by own-account transfers, used
-- for card spending) does not shorten the history: the income is seen where it has always been. So an income is
-- known to be regular, low, missing or stopped only once every account that could hold it and every source has had
-- the history to show it (features.income_known_days). All-time minima of the store's states and rows within the
-- store's stream window: a nightly merge gives what a rebuild gives. The latest start decides, so an old account,
-- open or closed, never shortens it; a current account opened and closed again lately does, until it is old enough,
-- when it held money that could be income. The day an account was first seen is read whatever its first posting
-- was: it says when the bank first saw the account, not what was bought.
-- Reads: customer_state, account_state, accounts_in, income_payers, cutoffs. Read by sql/features_customer.sql
-- (income_history_days) and sql/features_life_events.sql (income_history_days, which gates the income events).
with current_accounts as (
    select account_state.customer_id, account_state.first_day, account_state.first_income_day
    from account_state
    join accounts_in using (customer_id, account_id)
    where accounts_in.product = 'current' and account_state.first_day is not null
),

steady as (
    select distinct cutoff, customer_id
    from income_payers
    where is_steady
),

starts as (
    select cutoffs.cutoff, customer_state.customer_id, customer_state.first_posting_day as first_day
    from customer_state
    join cutoffs on customer_state.first_posting_day <= cutoffs.cutoff
    union all
    select cutoffs.cutoff, current_accounts.customer_id, current_accounts.first_day
    from current_accounts
    join cutoffs on current_accounts.first_day <= cutoffs.cutoff
    left join steady
        on steady.cutoff = cutoffs.cutoff and steady.customer_id = current_accounts.customer_id
    where coalesce(current_accounts.first_income_day <= cutoffs.cutoff, false) or steady.customer_id is null
),

final as (
    select cutoff, customer_id, max(first_day) as first_day
    from starts
    group by all
)

select * from final
