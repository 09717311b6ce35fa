-- One row per customer and cut-off: what the forecasters and classifiers see, from silver data on or before the
-- cut-off only. Customers without an open current account on the cut-off have no cash position and no row.
-- Own-account transfers (transactions_in.is_own_transfer) move the cash position but are neither income nor spend,
-- and own-transfer streams count as neither income nor outgoing streams. Arrears evidence (config/decisioning.yaml
-- `arrears`, variables <kind>_pattern): payments returned unpaid and fees only a missed or returned payment triggers, on
-- any of the customer's accounts, and overdue repayments of a loan or mortgage held here.
with positions as (
    select cutoffs.cutoff, daily_balance.customer_id, daily_balance.ds, daily_balance.value, daily_balance.net_flow,
        cutoffs.cutoff - daily_balance.ds as days_back
    from daily_balance
    join cutoffs on daily_balance.ds between cutoffs.cutoff - 89 and cutoffs.cutoff
),

history as (
    select cutoffs.cutoff, daily_balance.customer_id, min(daily_balance.first_day) as first_day,
        bool_and(daily_balance.has_reported_balance) as has_reported_balance
    from daily_balance
    join cutoffs on daily_balance.ds <= cutoffs.cutoff
    group by all
),

balance_features as (
    select
        cutoff, customer_id,
        max(value) filter (where days_back = 0) as balance_now,
        max(value) filter (where days_back = 30) as balance_30_days_ago,
        avg(value) filter (where days_back < 7) as balance_mean_7,
        avg(value) filter (where days_back < 30) as balance_mean_30,
        avg(value) as balance_mean_90,
        min(value) filter (where days_back < 30) as balance_min_30,
        min(value) as balance_min_90,
        max(value) as balance_max_90,
        coalesce(stddev_pop(value) filter (where days_back < 30), 0) as balance_std_30,
        coalesce(stddev_pop(value), 0) as balance_std_90,
        count(*) filter (where days_back < 30 and value < 0) as n_days_negative_30,
        count(*) filter (where value < 0) as n_days_negative_90,
        coalesce(regr_slope(value, -days_back), 0) as slope_90,
        coalesce(stddev_pop(net_flow) filter (where days_back < 30), 0) as net_flow_std_30,
        count(*) as n_days_90
    from positions
    group by all
    having count(*) filter (where days_back = 0) > 0
),

window_postings as (
    select cutoffs.cutoff, transactions_in.customer_id, transactions_in.booking_date, transactions_in.amount_value,
        transactions_in.channel, transactions_in.category, transactions_in.stream_key,
        transactions_in.is_own_transfer,
        cutoffs.cutoff - transactions_in.booking_date as days_back,
        streams.direction is not null as is_recurring
    from transactions_in
    semi join primary_days
        on primary_days.account_id = transactions_in.account_id and primary_days.ds = transactions_in.booking_date
    join cutoffs
        on transactions_in.booking_date between cutoffs.cutoff - 89 and cutoffs.cutoff
    left join recurring_streams as streams
        on streams.cutoff = cutoffs.cutoff
        and streams.customer_id = transactions_in.customer_id
        and streams.stream_key = transactions_in.stream_key
        and streams.direction = case when transactions_in.amount_value > 0 then 'in' else 'out' end
),

flow_features as (
    select
        cutoff, customer_id,
        coalesce(sum(amount_value) filter (where amount_value > 0 and days_back < 30), 0) as inflow_30,
        coalesce(-sum(amount_value) filter (where amount_value < 0 and days_back < 30), 0) as outflow_30,
        coalesce(sum(amount_value) filter (where days_back < 30), 0) as net_flow_30,
        coalesce(sum(amount_value), 0) as net_flow_90,
        coalesce(sum(amount_value) filter (where amount_value > 0 and not is_own_transfer
            and (is_recurring or channel in ('salary', 'benefit'))), 0) as income_90,
        max(booking_date) filter (where amount_value > 0 and not is_own_transfer
            and (is_recurring or channel in ('salary', 'benefit'))) as last_income_date,
        coalesce(-sum(amount_value) filter (where amount_value < 0 and is_recurring and not is_own_transfer), 0)
            as fixed_spend_90,
        coalesce(-sum(amount_value) filter (where amount_value < 0 and not is_recurring and not is_own_transfer), 0)
            as flexible_spend_90,
        coalesce(-sum(amount_value) filter (
            where amount_value < 0 and not is_recurring and not is_own_transfer and days_back < 30), 0)
            as flexible_spend_30,
        count(*) filter (where channel = 'fee') as n_fees_90,
        count(*) filter (where days_back < 30) as n_postings_30,
        coalesce(-sum(amount_value) filter (where amount_value < 0 and channel in ('card', 'atm')), 0) as card_spend_90,
        coalesce(-sum(amount_value) filter (where amount_value < 0 and category = 'groceries'), 0) as groceries_90,
        coalesce(-sum(amount_value) filter (where amount_value < 0 and category = 'eating_out'), 0) as eating_out_90,
        coalesce(-sum(amount_value) filter (where amount_value < 0 and category = 'travel'), 0) as travel_90,
        coalesce(-sum(amount_value) filter (where amount_value < 0 and category = 'gambling'), 0) as gambling_90,
        coalesce(-sum(amount_value) filter (where amount_value < 0 and channel = 'atm'), 0) as cash_90,
        coalesce(-sum(amount_value) filter (where amount_value < 0 and category = 'shopping'), 0) as shopping_90
    from window_postings
    group by all
),

daily_flexible as (
    select cutoff, customer_id, booking_date, -sum(amount_value) as spend
    from window_postings
    where amount_value < 0 and not is_recurring and not is_own_transfer and days_back < 30
    group by all
),

flexible_volatility as (
    -- the standard deviation of daily flexible spend over all 30 days, the days without any counted as zero
    select cutoff, customer_id,
        sqrt(greatest(sum(spend * spend) / 30 - power(sum(spend) / 30, 2), 0)) as flexible_spend_std_30
    from daily_flexible
    group by all
),

stream_features as (
    select
        cutoff, customer_id,
        count(*) filter (where direction = 'in' and lifecycle <> 'stopped') as n_income_streams,
        count(*) filter (where direction = 'out' and lifecycle <> 'stopped') as n_outgoing_streams,
        coalesce(max(regularity) filter (where direction = 'in' and lifecycle <> 'stopped'), 0) as income_regularity,
        coalesce(bool_or(direction = 'in' and lifecycle = 'mature' and cadence_days <= 31
            and regularity >= getvariable('min_income_regularity')), false) as has_regular_income,
        coalesce(sum(amount * 30.0 / cadence_days) filter (where direction = 'in' and lifecycle <> 'stopped'), 0)
            as monthly_recurring_income,
        coalesce(-sum(amount * 30.0 / cadence_days) filter (where direction = 'out' and lifecycle <> 'stopped'), 0)
            as monthly_recurring_outgoings,
        coalesce(bool_or(direction = 'in' and lifecycle = 'stopped' and cadence_days <= 31
            and n_occurrences >= 3), false) as is_income_stopped,
        min(greatest(next_expected_date - cutoff, 1)) filter (where direction = 'in' and lifecycle <> 'stopped')
            as days_to_next_income
    from recurring_streams
    -- neither own-account transfers nor interest credited or charged on an account are an income or a payment
    where not is_own_transfer and channel <> 'interest'
    group by all
),

arrears_postings as (
    -- a posting that shows a missed or returned payment, on any of the customer's accounts: its channel and
    -- description match the kind's pattern (pipelines/features.arrears_patterns, from config/decisioning.yaml)
    select customer_id, booking_date,
        regexp_matches(channel || ' ' || upper(coalesce(description, '')), getvariable('returned_payment_pattern'))
            as is_returned_payment,
        regexp_matches(channel || ' ' || upper(coalesce(description, '')), getvariable('arrears_fee_pattern'))
            as is_arrears_fee
    from transactions_in
    where booking_date > (select min(cutoff) from cutoffs) - getvariable('arrears_window_days')
        and list_contains(getvariable('arrears_channels'), channel)
),

arrears_evidence as (
    -- in the arrears window before each cut-off
    select cutoffs.cutoff, arrears_postings.customer_id,
        count(*) filter (where arrears_postings.is_returned_payment) as n_returned_payments,
        count(*) filter (where arrears_postings.is_arrears_fee) as n_arrears_fees
    from arrears_postings
    join cutoffs
        on arrears_postings.booking_date <= cutoffs.cutoff
        and arrears_postings.booking_date > cutoffs.cutoff - getvariable('arrears_window_days')
    where arrears_postings.is_returned_payment or arrears_postings.is_arrears_fee
    group by all
),

lending_accounts as (
    -- loans and mortgages held here, open on the cut-off
    select cutoffs.cutoff, accounts_in.customer_id, accounts_in.account_id, accounts_in.opened_on
    from accounts_in
    join cutoffs on coalesce(accounts_in.opened_on, cutoffs.cutoff) <= cutoffs.cutoff
        and coalesce(accounts_in.closed_on, cutoffs.cutoff + 1) > cutoffs.cutoff
    where accounts_in.source = 'core' and list_contains(getvariable('repayment_products'), accounts_in.product)
),

lending_balances as (
    -- the latest balance of the last 35 days (still owing when not zero) and the first day the data shows it
    select lending_accounts.cutoff, lending_accounts.account_id,
        arg_max(balances_in.balance_value, balances_in.as_of)
            filter (where balances_in.as_of > lending_accounts.cutoff - 35) as balance,
        min(balances_in.as_of) as first_seen
    from lending_accounts
    join balances_in
        on balances_in.account_id = lending_accounts.account_id and balances_in.as_of <= lending_accounts.cutoff
    group by all
),

lending_repayments as (
    select lending_accounts.cutoff, lending_accounts.account_id, max(transactions_in.booking_date) as last_repayment
    from lending_accounts
    join transactions_in
        on transactions_in.account_id = lending_accounts.account_id
        and transactions_in.booking_date <= lending_accounts.cutoff
        and transactions_in.amount_value > 0 and transactions_in.channel <> 'interest'
    group by all
),

missed_repayments as (
    -- a loan or mortgage still owing whose last repayment (or, with none yet, whose start) is too long ago
    select lending_accounts.cutoff, lending_accounts.customer_id, count(*) as n_missed_repayments
    from lending_accounts
    join lending_balances using (cutoff, account_id)
    left join lending_repayments using (cutoff, account_id)
    where lending_balances.balance <> 0
        and case
            when lending_repayments.last_repayment is not null
                then lending_accounts.cutoff - lending_repayments.last_repayment
                    > getvariable('missed_repayment_days')
            else lending_accounts.cutoff - greatest(coalesce(lending_accounts.opened_on, lending_balances.first_seen),
                                                    lending_balances.first_seen)
                    > getvariable('first_repayment_days')
        end
    group by all
),

limits as (
    select cutoffs.cutoff, accounts_in.customer_id, sum(coalesce(accounts_in.overdraft_limit, 0)) as overdraft_limit
    from accounts_in
    join cutoffs on coalesce(accounts_in.opened_on, cutoffs.cutoff) <= cutoffs.cutoff
        and coalesce(accounts_in.closed_on, cutoffs.cutoff + 1) > cutoffs.cutoff
    semi join primary_days
        on primary_days.account_id = accounts_in.account_id and primary_days.ds = cutoffs.cutoff
    group by all
),

other_balances as (
    select cutoffs.cutoff, accounts_in.customer_id, accounts_in.account_id, accounts_in.source, accounts_in.product,
        arg_max(balances_in.balance_value, balances_in.as_of) as balance
    from balances_in
    join accounts_in using (account_id)
    join cutoffs on balances_in.as_of between cutoffs.cutoff - 35 and cutoffs.cutoff
    anti join primary_days
        on primary_days.account_id = balances_in.account_id and primary_days.ds = cutoffs.cutoff
    group by all
),

holdings as (
    select cutoff, customer_id,
        coalesce(sum(balance) filter (where source = 'core' and product = 'savings'), 0) as savings_balance,
        coalesce(sum(balance) filter (where source = 'openbanking'), 0) as external_balance,
        count(*) filter (where source = 'openbanking') as n_external_accounts
    from other_balances
    group by all
),

final as (
    select
        balance_features.customer_id,
        balance_features.cutoff,
        balance_features.cutoff - history.first_day + 1 as history_days,
        history.has_reported_balance,
        balance_features.balance_now,
        balance_features.balance_now - balance_features.balance_30_days_ago as change_30,
        balance_features.balance_mean_7,
        balance_features.balance_mean_30,
        balance_features.balance_mean_90,
        balance_features.balance_min_30,
        balance_features.balance_min_90,
        balance_features.balance_max_90,
        balance_features.balance_std_30,
        balance_features.balance_std_90,
        balance_features.n_days_negative_30,
        balance_features.n_days_negative_90,
        balance_features.slope_90,
        balance_features.net_flow_std_30,
        coalesce(flow_features.inflow_30, 0) as inflow_30,
        coalesce(flow_features.outflow_30, 0) as outflow_30,
        coalesce(flow_features.net_flow_30, 0) as net_flow_30,
        coalesce(flow_features.net_flow_90, 0) as net_flow_90,
        coalesce(flow_features.income_90, 0) as income_90,
        balance_features.cutoff - flow_features.last_income_date as days_since_income,
        coalesce(flow_features.fixed_spend_90, 0) as fixed_spend_90,
        coalesce(flow_features.flexible_spend_90, 0) as flexible_spend_90,
        coalesce(flow_features.flexible_spend_30, 0) as flexible_spend_30,
        coalesce(flexible_volatility.flexible_spend_std_30, 0) as flexible_spend_std_30,
        coalesce(flow_features.n_fees_90, 0) as n_fees_90,
        coalesce(arrears_evidence.n_returned_payments, 0) as n_returned_payments,
        coalesce(arrears_evidence.n_arrears_fees, 0) as n_arrears_fees,
        coalesce(missed_repayments.n_missed_repayments, 0) as n_missed_repayments,
        coalesce(flow_features.n_postings_30, 0) as n_postings_30,
        coalesce(flow_features.groceries_90 / nullif(flow_features.card_spend_90, 0), 0) as share_groceries_90,
        coalesce(flow_features.eating_out_90 / nullif(flow_features.card_spend_90, 0), 0) as share_eating_out_90,
        coalesce(flow_features.travel_90 / nullif(flow_features.card_spend_90, 0), 0) as share_travel_90,
        coalesce(flow_features.gambling_90 / nullif(flow_features.card_spend_90, 0), 0) as share_gambling_90,
        coalesce(flow_features.cash_90 / nullif(flow_features.card_spend_90, 0), 0) as share_cash_90,
        coalesce(flow_features.shopping_90 / nullif(flow_features.card_spend_90, 0), 0) as share_shopping_90,
        coalesce(stream_features.n_income_streams, 0) as n_income_streams,
        coalesce(stream_features.n_outgoing_streams, 0) as n_outgoing_streams,
        coalesce(stream_features.income_regularity, 0) as income_regularity,
        coalesce(stream_features.has_regular_income, false) as has_regular_income,
        coalesce(stream_features.is_income_stopped, false) as is_income_stopped,
        coalesce(stream_features.monthly_recurring_income, 0) as monthly_recurring_income,
        coalesce(stream_features.monthly_recurring_outgoings, 0) as monthly_recurring_outgoings,
        stream_features.days_to_next_income,
        coalesce(limits.overdraft_limit, 0) as overdraft_limit,
        balance_features.balance_now + coalesce(limits.overdraft_limit, 0) as headroom_now,
        balance_features.n_days_negative_90 / balance_features.n_days_90 as overdraft_use_90,
        coalesce(holdings.savings_balance, 0) as savings_balance,
        coalesce(holdings.external_balance, 0) as external_balance,
        coalesce(holdings.n_external_accounts, 0) as n_external_accounts,
        year(balance_features.cutoff) - customers_in.birth_year as age,
        balance_features.cutoff - customers_in.customer_since as tenure_days,
        day(balance_features.cutoff) as day_of_month
    from balance_features
    join history using (cutoff, customer_id)
    left join flow_features using (cutoff, customer_id)
    left join flexible_volatility using (cutoff, customer_id)
    left join stream_features using (cutoff, customer_id)
    left join limits using (cutoff, customer_id)
    left join holdings using (cutoff, customer_id)
    left join arrears_evidence using (cutoff, customer_id)
    left join missed_repayments using (cutoff, customer_id)
    left join customers_in using (customer_id)
)

select * from final
