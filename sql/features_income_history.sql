-- The start of the history every income claim is judged on, per customer and cut-off (docs/forecasting.md, "Short
-- histories"): the latest of the first posting of each source of the customer's data (core, open banking:
-- customer_state, the start of a source the new-stream rule of sql/features_life_events.sql reads) and the first
-- day of data of each of the customer's current accounts, here or connected through open banking (account_state:
-- a posting or a reported balance), that started by the cut-off. A salary can arrive on any current account: one
-- paid into an account opened (or connected) 30 days ago is not a stream there yet, and its earlier payments, made
-- elsewhere, are not in the data, however long the customer's other accounts have been seen. So an income is
-- known to be regular, low, missing or stopped only once every current account and every source has had the
-- history to show it (features.income_known_days). All-time minima of the store's states: a nightly merge gives
-- what a rebuild gives. The latest account decides, so an old account, open or closed, never shortens it; a
-- current account opened and closed again lately does, until it is old enough. The day an account was first seen
-- is read whatever its first posting was: it says when the bank first saw the account, not what was bought.
-- Reads: customer_state, account_state, accounts_in, cutoffs. Read by sql/features_customer.sql
-- (income_history_days) and sql/features_life_events.sql (income_history_days, which gates the income events).
with starts as (
    select customer_id, first_posting_day as first_day
    from customer_state
    union all
    select account_state.customer_id, account_state.first_day
    from account_state
    join accounts_in using (customer_id, account_id)
    where accounts_in.product = 'current' and account_state.first_day is not null
),

final as (
    select cutoffs.cutoff, starts.customer_id, max(starts.first_day) as first_day
    from starts
    join cutoffs on starts.first_day <= cutoffs.cutoff
    group by all
)

select * from final
