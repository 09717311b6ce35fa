-- One row per customer and cut-off: what the forecasters and classifiers see, from data on or before the cut-off
-- only: the store's daily rows (day_rows, balances_in), its per-account state and the account series
-- (account_days). Customers without an open current account on the cut-off have no cash position and no row.
-- Own-account transfers (day_rows.is_own_transfer) move the cash position but are neither income nor spend,
-- and own-transfer streams count as neither income nor outgoing streams. Arrears evidence (config/decisioning.yaml
-- `arrears`, found when a posting arrives: day_rows.is_returned_payment, is_arrears_fee): payments returned unpaid and fees only a missed or returned payment triggers, on
-- any of the customer's accounts, and overdue repayments of a loan or mortgage held here. A stopped income stream
-- that a new payer of its kind replaced (income_payers, sql/features_income_payers.sql) is no stopped income: it
-- goes on under the new payer in the regular income (continued_streams); one whose replacement is pending (the new
-- payer paid once) is neither stopped nor known (is_income_pending, features.income_unknown).
with positions as (
    -- the cash position each cut-off saw over its 90 days. An account never reported before is rebuilt back from
    -- its first report only by a cut-off that has seen it; before that report (or with no report at all) its level
    -- is not known: its postings alone say how it moved, not where it stood, and a position summed from zero is no
    -- position. A day whose position rests on such an account is left out, and a customer whose position is not
    -- known on the cut-off day has no row (no forecast made from a level the bank never had), as one without an open
    -- current account has none.
    select cutoffs.cutoff, account_days.customer_id, account_days.ds,
        sum(account_days.balance) as value,
        sum(account_days.net_flow) as net_flow,
        cutoffs.cutoff - account_days.ds as days_back
    from account_days
    join cutoffs on account_days.ds between cutoffs.cutoff - 89 and cutoffs.cutoff
    where account_days.is_primary
    group by all
    having bool_and(account_days.is_anchored_before or coalesce(account_days.report_day <= cutoffs.cutoff, false))
),

history as (
    -- over the accounts that made the cash position in the series window before the cut-off
    select cutoffs.cutoff, account_days.customer_id, min(account_days.first_day) as first_day,
        bool_and(account_days.is_anchored_before or coalesce(account_days.report_day <= cutoffs.cutoff, false))
            as has_reported_balance
    from account_days
    join cutoffs
        on account_days.ds <= cutoffs.cutoff
        and account_days.ds > cutoffs.cutoff - cast(getvariable('series_days') as integer)
    where account_days.is_primary
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
    select cutoffs.cutoff, day_rows.customer_id, day_rows.ds as booking_date, day_rows.n, day_rows.amount,
        day_rows.sign, day_rows.channel, day_rows.category, day_rows.is_own_transfer,
        cutoffs.cutoff - day_rows.ds as days_back,
        streams.direction is not null as is_recurring
    from day_rows
    semi join primary_days
        on primary_days.account_id = day_rows.account_id and primary_days.ds = day_rows.ds
    join cutoffs
        on day_rows.ds between cutoffs.cutoff - 89 and cutoffs.cutoff
    left join recurring_streams as streams
        on streams.cutoff = cutoffs.cutoff
        and streams.customer_id = day_rows.customer_id
        and streams.stream_key = day_rows.stream_key
        and streams.direction = case when day_rows.sign > 0 then 'in' else 'out' end
),

flow_features as (
    select
        cutoff, customer_id,
        coalesce(sum(amount) filter (where sign > 0 and days_back < 30), 0) as inflow_30,
        coalesce(-sum(amount) filter (where sign < 0 and days_back < 30), 0) as outflow_30,
        coalesce(sum(amount) filter (where days_back < 30), 0) as net_flow_30,
        coalesce(sum(amount), 0) as net_flow_90,
        coalesce(sum(amount) filter (where sign > 0 and not is_own_transfer
            and (is_recurring or channel in ('salary', 'benefit'))), 0) as income_90,
        max(booking_date) filter (where sign > 0 and not is_own_transfer
            and (is_recurring or channel in ('salary', 'benefit'))) as last_income_date,
        -- income (as income_90 counts it) on no recurring stream: an income the history is too short to see
        -- as a stream yet, or one paid irregularly; the baseline projects it at its average rate, as it does the
        -- spend on no stream (flexible_spend_90)
        coalesce(sum(amount) filter (where sign > 0 and not is_own_transfer and not is_recurring
            and channel in ('salary', 'benefit')), 0) as unscheduled_income_90,
        coalesce(-sum(amount) filter (where sign < 0 and is_recurring and not is_own_transfer), 0)
            as fixed_spend_90,
        coalesce(-sum(amount) filter (where sign < 0 and not is_recurring and not is_own_transfer), 0)
            as flexible_spend_90,
        coalesce(-sum(amount) filter (
            where sign < 0 and not is_recurring and not is_own_transfer and days_back < 30), 0)
            as flexible_spend_30,
        coalesce(sum(n) filter (where channel = 'fee'), 0) as n_fees_90,
        coalesce(sum(n) filter (where days_back < 30), 0) as n_postings_30,
        coalesce(-sum(amount) filter (where sign < 0 and channel in ('card', 'atm')), 0) as card_spend_90,
        coalesce(-sum(amount) filter (where sign < 0 and category = 'groceries'), 0) as groceries_90,
        coalesce(-sum(amount) filter (where sign < 0 and category = 'eating_out'), 0) as eating_out_90,
        coalesce(-sum(amount) filter (where sign < 0 and category = 'travel'), 0) as travel_90,
        coalesce(-sum(amount) filter (where sign < 0 and category = 'gambling'), 0) as gambling_90,
        coalesce(-sum(amount) filter (where sign < 0 and channel = 'atm'), 0) as cash_90,
        coalesce(-sum(amount) filter (where sign < 0 and category = 'shopping'), 0) as shopping_90
    from window_postings
    group by all
),

daily_flexible as (
    select cutoff, customer_id, booking_date, -sum(amount) as spend
    from window_postings
    where sign < 0 and not is_recurring and not is_own_transfer and days_back < 30
    group by all
),

flexible_volatility as (
    -- the standard deviation of daily flexible spend over all 30 days, the days without any counted as zero
    select cutoff, customer_id,
        sqrt(greatest(sum(spend * spend) / 30 - power(sum(spend) / 30, 2), 0)) as flexible_spend_std_30
    from daily_flexible
    group by all
),

outflow_accounts as (
    -- the accounts that made the cash position on some day of the 90 days before each cut-off (the window of the
    -- flow features; the series the night keeps reaches no further back than `series_days`)
    select distinct cutoffs.cutoff, account_days.account_id
    from account_days
    join cutoffs on account_days.ds between cutoffs.cutoff - 89 and cutoffs.cutoff
    where account_days.is_primary
),

outflow_months as (
    -- their outflow (fixed and flexible spend: own-account transfers in neither) per 30-day month before the
    -- cut-off, month 0 the 30 days ending on it, over the `outflow_months` months (config/event_forecast.yaml; the
    -- store keeps `posting_days` of postings, pipelines/store.windows checks that they fit)
    select cutoffs.cutoff, day_rows.customer_id,
        cast((cutoffs.cutoff - day_rows.ds) // 30 as integer) as month,
        -sum(day_rows.amount) as outflow
    from day_rows
    join cutoffs
        on day_rows.ds between cutoffs.cutoff - (30 * getvariable('outflow_months') - 1) and cutoffs.cutoff
    semi join outflow_accounts
        on outflow_accounts.cutoff = cutoffs.cutoff and outflow_accounts.account_id = day_rows.account_id
    where day_rows.sign < 0 and not day_rows.is_own_transfer
    group by all
),

month_grid as (
    -- the complete months the history covers (a month without any outflow is one of them, at 0)
    select cutoff, customer_id,
        unnest(range(cast(least(getvariable('outflow_months'), (cutoff - first_day + 1) // 30) as bigint))) as month
    from history
),

typical_outflow as (
    -- the typical month: the median of those months, so one heavy month (December, a holiday, the large payment
    -- itself) does not move it; none with under 30 days of history
    select month_grid.cutoff, month_grid.customer_id,
        median(coalesce(outflow_months.outflow, 0)) as typical_monthly_outflow
    from month_grid
    left join outflow_months using (cutoff, customer_id, month)
    group by all
),

last_year_rows as (
    -- the calendar (config/event_forecast.yaml `calendar`): the customer's payments out (own-account transfers
    -- not) in the same weeks a year before, (cutoff - last_year_days, cutoff - last_year_days + 90], per 30-day
    -- block of that window (block 1: the first 30 days). Only the rows the store keeps for a year are read
    -- (`last_year_rows`: 'kept', the stream rows of stream_days, or 'all' when the store keeps every posting that
    -- long, pipelines/store.windows checks), so the night and training see the same rows.
    select cutoffs.cutoff, day_rows.customer_id,
        cast((day_rows.ds - (cutoffs.cutoff - getvariable('last_year_days')) - 1) // 30 as integer) + 1 as block,
        -sum(day_rows.amount) as outflow,
        max(day_rows.max_neg_amount) as largest
    from day_rows
    join cutoffs
        on day_rows.ds > cutoffs.cutoff - getvariable('last_year_days')
        and day_rows.ds <= cutoffs.cutoff - getvariable('last_year_days') + 90
    where day_rows.sign < 0 and not day_rows.is_own_transfer
        and (getvariable('last_year_all_rows') or day_rows.is_stream_row)
    group by all
),

last_year as (
    select cutoff, customer_id,
        sum(outflow) filter (where block = 1) as ly_outflow_1,
        sum(outflow) filter (where block = 2) as ly_outflow_2,
        sum(outflow) filter (where block = 3) as ly_outflow_3,
        max(largest) filter (where block = 1) as ly_largest_1,
        max(largest) filter (where block = 2) as ly_largest_2,
        max(largest) filter (where block = 3) as ly_largest_3
    from last_year_rows
    group by all
),

replaced_payers as (
    -- the income payers a new payer of their kind replaced, or would but for its second payment (pending)
    -- (sql/features_income_payers.sql)
    select cutoff, customer_id, stream_key, bool_or(is_replaced) as is_replaced, bool_or(is_pending) as is_pending,
        arg_min(replaced_by, (replaced_by is null, kind)) as replaced_by,
        arg_min(replaced_by_amount, (replaced_by is null, kind)) as replaced_by_amount,
        arg_min(replaced_by_last_day, (replaced_by is null, kind)) as replaced_by_last_day,
        arg_min(replaced_by_payments, (replaced_by is null, kind)) as replaced_by_payments,
        arg_min(replaced_by_gap_days, (replaced_by is null, kind)) as replaced_by_gap_days
    from income_payers
    group by all
    having bool_or(is_replaced or is_pending)
),

income_pending as (
    -- a stopped income whose replacement waits for the new payer's second payment: nothing is said of the income
    select cutoff, customer_id, bool_or(is_pending) as is_income_pending
    from income_payers
    group by all
),

streams_replaced as (
    select recurring_streams.cutoff, recurring_streams.customer_id, recurring_streams.direction,
        recurring_streams.channel, recurring_streams.cadence_days, recurring_streams.regularity,
        recurring_streams.amount, recurring_streams.n_occurrences, recurring_streams.lifecycle,
        recurring_streams.next_expected_date, recurring_streams.is_own_transfer,
        coalesce(replaced_payers.is_replaced, false) as is_replaced,
        coalesce(replaced_payers.is_pending, false) as is_pending
    from recurring_streams
    left join replaced_payers
        on replaced_payers.cutoff = recurring_streams.cutoff
        and replaced_payers.customer_id = recurring_streams.customer_id
        and replaced_payers.stream_key = recurring_streams.stream_key
        and recurring_streams.direction = 'in'
),

continuing as (
    -- a stopped income stream a new payer of its kind replaced, until the new payer is a recurring stream itself,
    -- with the new payer's cadence: the one its mean gap between payments fits (as sql/features_recurring_streams.sql
    -- classifies a stream's gaps; a weekly wage replaced by a monthly salary is monthly now); none fits: no
    -- continued income (the old one is still no stopped income)
    select streams.cutoff, streams.customer_id, replaced.replaced_by,
        any_value(streams.channel) as channel,
        arg_max(streams.regularity, streams.last_date) as regularity,
        arg_max(streams.n_occurrences, streams.last_date) as old_occurrences,
        any_value(replaced.replaced_by_amount) as amount,
        any_value(replaced.replaced_by_last_day) as last_date,
        any_value(replaced.replaced_by_payments) as new_payments,
        any_value(replaced.replaced_by_gap_days) as gap_days
    from recurring_streams as streams
    join replaced_payers as replaced
        on replaced.cutoff = streams.cutoff
        and replaced.customer_id = streams.customer_id
        and replaced.stream_key = streams.stream_key
        and replaced.is_replaced
    where streams.direction = 'in' and streams.lifecycle = 'stopped' and not streams.is_own_transfer
        and streams.channel <> 'interest'
        and not exists (
            select 1 from recurring_streams as own
            where own.cutoff = streams.cutoff and own.customer_id = streams.customer_id
                and own.stream_key = replaced.replaced_by and own.direction = 'in' and own.lifecycle <> 'stopped')
    group by streams.cutoff, streams.customer_id, replaced.replaced_by
),

continued_streams as (
    -- the replaced income goes on under its new payer (a new employer's salary after the old one's is the customer's
    -- regular income from its second payment): the new payer's typical payment at its cadence, the old stream's
    -- regularity, the next date one cadence after the new payer's latest payment (stream_next_date,
    -- sql/stream_lifecycle.sql), mature or early by the payments of both (sql/stream_lifecycle.sql)
    select continuing.cutoff, continuing.customer_id, 'in' as direction, continuing.channel,
        cadences.cadence_days, continuing.regularity, continuing.amount,
        continuing.old_occurrences + continuing.new_payments as n_occurrences,
        stream_lifecycle(continuing.cutoff, continuing.last_date, cadences.cadence, cadences.cadence_days,
                         continuing.old_occurrences + continuing.new_payments) as lifecycle,
        stream_next_date(continuing.last_date, cadences.cadence, cadences.cadence_days) as next_expected_date,
        false as is_own_transfer, false as is_replaced, false as is_pending
    from continuing
    join cadences
        on abs(continuing.gap_days - cadences.cadence_days) <= cadences.tolerance
        or (cadences.cadence = 'monthly' and continuing.gap_days between 28 and 31)
    qualify row_number() over (partition by continuing.cutoff, continuing.customer_id, continuing.replaced_by
                               order by cadences.priority) = 1
),

income_streams as (
    select * from streams_replaced
    union all by name
    select * from continued_streams
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
        -- a stopped income that a new payer of its kind replaced (income_payers.is_replaced: a new employer's
        -- salary after the old one's) did not stop: it goes on in continued_streams; one whose replacement is
        -- pending is not said to have stopped either (is_income_pending)
        coalesce(bool_or(direction = 'in' and lifecycle = 'stopped' and cadence_days <= 31
            and n_occurrences >= 3 and not is_replaced and not is_pending), false) as is_income_stopped,
        min(greatest(next_expected_date - cutoff, 1)) filter (where direction = 'in' and lifecycle <> 'stopped')
            as days_to_next_income
    from income_streams
    -- neither own-account transfers nor interest credited or charged on an account are an income or a payment
    where not is_own_transfer and channel <> 'interest'
    group by all
),

arrears_evidence as (
    -- payments returned unpaid and fees only a missed or returned payment triggers (store_postings.sql, from
    -- config/decisioning.yaml `arrears`), on any of the customer's accounts, in the arrears window before each cut-off
    select cutoffs.cutoff, day_rows.customer_id,
        coalesce(sum(day_rows.n) filter (where day_rows.is_returned_payment), 0) as n_returned_payments,
        coalesce(sum(day_rows.n) filter (where day_rows.is_arrears_fee), 0) as n_arrears_fees
    from day_rows
    join cutoffs
        on day_rows.ds <= cutoffs.cutoff
        and day_rows.ds > cutoffs.cutoff - getvariable('arrears_window_days')
    where day_rows.is_returned_payment or day_rows.is_arrears_fee
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
    select lending_accounts.cutoff, lending_accounts.account_id, account_state.first_balance_day as first_seen,
        arg_max(balances_in.balance_value, balances_in.as_of) as balance
    from lending_accounts
    join account_state
        on account_state.account_id = lending_accounts.account_id
        and account_state.customer_id = lending_accounts.customer_id
        and account_state.first_balance_day <= lending_accounts.cutoff
    left join balances_in
        on balances_in.account_id = lending_accounts.account_id
        and balances_in.as_of between lending_accounts.cutoff - 34 and lending_accounts.cutoff
    group by all
),

lending_repayments as (
    -- the latest credit that is not interest: in the posting window, else (an older one) the first ever, which is
    -- as overdue as any repayment older than the window
    select lending_accounts.cutoff, lending_accounts.account_id,
        coalesce(max(day_rows.ds), case when any_value(account_state.first_credit_day) <= lending_accounts.cutoff
                                         then any_value(account_state.first_credit_day) end) as last_repayment
    from lending_accounts
    join account_state
        on account_state.account_id = lending_accounts.account_id
        and account_state.customer_id = lending_accounts.customer_id
    left join day_rows
        on day_rows.account_id = lending_accounts.account_id
        and day_rows.ds <= lending_accounts.cutoff
        and day_rows.ds > lending_accounts.cutoff - getvariable('posting_days')
        and day_rows.sign > 0 and day_rows.channel <> 'interest'
    group by lending_accounts.cutoff, lending_accounts.account_id
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
        -- the shortest history of the customer's sources and current accounts (income_history:
        -- sql/features_income_history.sql; never longer than history_days): what every claim about the
        -- customer's regular income needs (features.income_known_days)
        least(balance_features.cutoff - history.first_day + 1,
              balance_features.cutoff - income_history.first_day + 1) as income_history_days,
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
        coalesce(flow_features.unscheduled_income_90, 0) as unscheduled_income_90,
        coalesce(flow_features.fixed_spend_90, 0) as fixed_spend_90,
        coalesce(flow_features.flexible_spend_90, 0) as flexible_spend_90,
        coalesce(flow_features.flexible_spend_30, 0) as flexible_spend_30,
        coalesce(flexible_volatility.flexible_spend_std_30, 0) as flexible_spend_std_30,
        -- the large-expense threshold's monthly outflow (docs/forecasting.md, "Income drops and large expenses"):
        -- the median month above; under 30 days of history, the outflow so far per day of it, times 30
        coalesce(typical_outflow.typical_monthly_outflow,
            (coalesce(flow_features.fixed_spend_90, 0) + coalesce(flow_features.flexible_spend_90, 0))
                / least(balance_features.cutoff - history.first_day + 1, 90) * 30) as typical_monthly_outflow,
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
        -- a stopped income a new payer may be replacing, paid once so far: no income claim (features.income_unknown)
        coalesce(income_pending.is_income_pending, false) as is_income_pending,
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
        day(balance_features.cutoff) as day_of_month,
        -- the same weeks a year before (last_year above): null when the history does not reach back to them
        history.first_day <= balance_features.cutoff - getvariable('last_year_days') as has_last_year,
        case when history.first_day <= balance_features.cutoff - getvariable('last_year_days')
            then coalesce(last_year.ly_outflow_1, 0) end as ly_outflow_1,
        case when history.first_day <= balance_features.cutoff - getvariable('last_year_days')
            then coalesce(last_year.ly_outflow_2, 0) end as ly_outflow_2,
        case when history.first_day <= balance_features.cutoff - getvariable('last_year_days')
            then coalesce(last_year.ly_outflow_3, 0) end as ly_outflow_3,
        case when history.first_day <= balance_features.cutoff - getvariable('last_year_days')
            then coalesce(last_year.ly_largest_1, 0) end as ly_largest_1,
        case when history.first_day <= balance_features.cutoff - getvariable('last_year_days')
            then coalesce(last_year.ly_largest_2, 0) end as ly_largest_2,
        case when history.first_day <= balance_features.cutoff - getvariable('last_year_days')
            then coalesce(last_year.ly_largest_3, 0) end as ly_largest_3
    from balance_features
    join history using (cutoff, customer_id)
    left join income_history using (cutoff, customer_id)
    left join flow_features using (cutoff, customer_id)
    left join flexible_volatility using (cutoff, customer_id)
    left join typical_outflow using (cutoff, customer_id)
    left join last_year using (cutoff, customer_id)
    left join stream_features using (cutoff, customer_id)
    left join income_pending using (cutoff, customer_id)
    left join limits using (cutoff, customer_id)
    left join holdings using (cutoff, customer_id)
    left join arrears_evidence using (cutoff, customer_id)
    left join missed_repayments using (cutoff, customer_id)
    left join customers_in using (customer_id)
)

select * from final
