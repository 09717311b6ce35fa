-- Exchange rates as of D: the latest delivered rate per currency over the previous snapshot.
with previous as (
    select currency, rate_to_base, updated_load_date
    from prev_fx_rates
),

delivered as (
    select currency, rate_to_base, getvariable('load_date') as updated_load_date
    from bronze_fx_rates
    qualify row_number() over (partition by currency order by source_file desc, source_line desc) = 1
),

final as (
    select currency, rate_to_base, updated_load_date from delivered
    union all
    select currency, rate_to_base, updated_load_date from previous
    where currency not in (select currency from delivered)
)

select * from final
