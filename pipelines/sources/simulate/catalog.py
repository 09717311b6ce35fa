"""Who the bank's customers pay and are paid by: merchants with their MCC, employers, utilities, lenders.

Every posting carries a label: an index into one table of (description, merchant_name, mcc, channel,
counterparty_id, own_slot). `own_slot` marks a transfer between a customer's own accounts: the writer turns it into
the other account's id. The table is built in a fixed order, so label numbers are the same on every run.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

BANK_NAME = "SEGBANK"

REGIONS = ["North East", "North West", "Yorkshire and The Humber", "East Midlands", "West Midlands",
           "East of England", "London", "South East", "South West", "Wales", "Scotland", "Northern Ireland"]
REGION_WEIGHTS = np.array([4.0, 11.0, 8.2, 7.3, 8.9, 9.4, 13.4, 13.8, 8.5, 4.7, 8.1, 2.8])

COUNCILS = {
    "North East": ["NEWCASTLE CITY", "SUNDERLAND CITY", "DURHAM COUNTY"],
    "North West": ["MANCHESTER CITY", "LIVERPOOL CITY", "LANCASHIRE"],
    "Yorkshire and The Humber": ["LEEDS CITY", "SHEFFIELD CITY", "YORK CITY"],
    "East Midlands": ["NOTTINGHAM CITY", "LEICESTER CITY", "DERBY CITY"],
    "West Midlands": ["BIRMINGHAM CITY", "COVENTRY CITY", "WOLVERHAMPTON"],
    "East of England": ["NORWICH CITY", "CAMBRIDGE CITY", "COLCHESTER"],
    "London": ["LB CAMDEN", "LB HACKNEY", "LB CROYDON", "RB GREENWICH"],
    "South East": ["BRIGHTON HOVE", "OXFORD CITY", "READING BOROUGH"],
    "South West": ["BRISTOL CITY", "PLYMOUTH CITY", "EXETER CITY"],
    "Wales": ["CARDIFF", "SWANSEA", "NEWPORT CITY"],
    "Scotland": ["GLASGOW CITY", "CITY OF EDINBURGH", "ABERDEEN CITY"],
    "Northern Ireland": ["BELFAST CITY", "DERRY STRABANE", "LISBURN CASTLEREAGH"],
}

_EMPLOYER_STEMS = ["ACME", "NORTHWIND", "BRIGHTWATER", "OAKFIELD", "REDWOOD", "PENNINE", "SEVERN", "THAMESIDE",
                   "HIGHGATE", "KESTREL", "LANTERN", "MERIDIAN", "NOVA", "ORCHARD", "PEMBROKE", "QUAYSIDE",
                   "RIVERSTONE", "SILVERDALE", "TRINITY", "UNITY", "VALLEY", "WESTBROOK", "YORKSTONE", "ZENITH"]
_EMPLOYER_SUFFIX = ["LTD", "PLC", "GROUP LTD", "SERVICES LTD", "HOLDINGS", "LOGISTICS LTD", "RETAIL LTD",
                    "HEALTHCARE LTD", "NHS TRUST", "COUNCIL"]

# category: (mcc, [merchant names]); the names are what a UK card statement shows.
CARD_MERCHANTS: dict[str, tuple[str, list[str]]] = {
    "groceries": ("5411", ["TESCO STORES", "SAINSBURYS", "ASDA STORES", "MORRISONS", "ALDI", "LIDL GB",
                           "WAITROSE", "CO-OP GROUP", "M&S SIMPLY FOOD", "ICELAND"]),
    "convenience": ("5499", ["TESCO EXPRESS", "SPAR", "ONE STOP", "COSTCUTTER", "LONDIS"]),
    "restaurants": ("5812", ["NANDOS", "PIZZA EXPRESS", "WAGAMAMA", "ZIZZI", "DISHOOM", "BELLA ITALIA",
                             "THE IVY", "TOBY CARVERY"]),
    "fast_food": ("5814", ["MCDONALDS", "GREGGS", "COSTA COFFEE", "STARBUCKS", "PRET A MANGER", "KFC",
                           "SUBWAY", "JUST EAT", "DELIVEROO"]),
    "bars": ("5813", ["WETHERSPOON", "ALL BAR ONE", "GREENE KING PUB", "THE RED LION", "BREWDOG BAR"]),
    "fuel": ("5541", ["SHELL", "BP", "ESSO", "TESCO PETROL", "TEXACO"]),
    "transport": ("4111", ["TFL TRAVEL CHARGE", "NATIONAL RAIL", "TRAINLINE", "FIRST BUS", "STAGECOACH"]),
    "taxi": ("4121", ["UBER TRIP", "BOLT", "ADDISON LEE", "FREENOW"]),
    "clothing": ("5651", ["PRIMARK", "NEXT", "H&M", "ZARA", "MARKS & SPENCER", "TK MAXX", "UNIQLO"]),
    "online": ("5999", ["AMAZON.CO.UK", "EBAY", "ETSY", "ARGOS", "ASOS", "VINTED"]),
    "pharmacy": ("5912", ["BOOTS", "SUPERDRUG", "LLOYDS PHARMACY"]),
    "entertainment": ("7832", ["ODEON", "CINEWORLD", "VUE CINEMAS", "EVERYMAN"]),
    "home_diy": ("5200", ["B&Q", "WICKES", "HOMEBASE", "SCREWFIX", "TOOLSTATION"]),
    "electronics": ("5732", ["CURRYS", "APPLE STORE", "JOHN LEWIS ELECTRICAL", "SAMSUNG UK"]),
    "beauty": ("7230", ["TONI&GUY", "SUPERCUTS", "REGIS SALON", "BARBER SHOP"]),
    "department": ("5311", ["JOHN LEWIS", "DEBENHAMS ONLINE", "HARRODS", "HOUSE OF FRASER"]),
    "gambling": ("7995", ["BET365", "WILLIAM HILL", "PADDY POWER", "NATIONAL LOTTERY", "SKY BET"]),
    "streaming": ("5815", ["NETFLIX.COM", "SPOTIFY UK", "DISNEY PLUS", "AMAZON PRIME"]),
    "car_repair": ("7538", ["KWIK FIT", "HALFORDS AUTOCENTRE", "NATIONAL TYRES", "MR CLUTCH"]),
    "vet": ("0742", ["VETS4PETS", "MEDIVET", "PETS AT HOME VET"]),
    "plumbing": ("1711", ["HOMESERVE REPAIR", "PIMLICO PLUMBERS", "CORGI HEATING"]),
    "appliances": ("5722", ["AO.COM", "CURRYS APPLIANCES", "APPLIANCES DIRECT"]),
    "removals": ("4214", ["PICKFORDS", "BRITANNIA MOVERS", "ANYVAN"]),
    "furniture": ("5712", ["IKEA", "DFS", "FURNITURE VILLAGE", "DUNELM", "OAK FURNITURELAND"]),
    "surveyor": ("8911", ["COUNTRYWIDE SURVEYORS", "E.SURV CHARTERED", "CONNELLS SURVEY"]),
    "baby": ("5641", ["MOTHERCARE", "MAMAS & PAPAS", "SMYTHS TOYS", "JOHN LEWIS NURSERY", "NEXT BABY"]),
    "jewellery": ("5944", ["H SAMUEL", "ERNEST JONES", "GOLDSMITHS", "BEAVERBROOKS"]),
    "wedding_venue": ("7299", ["HOLLY HALL WEDDINGS", "BARN AT THE GREEN", "MANOR HOUSE EVENTS"]),
    "caterer": ("5811", ["FEAST CATERING", "GOLDEN PLATE CATERERS", "COUNTRY KITCHEN EVENTS"]),
    "bridal": ("5621", ["DAVID'S BRIDAL", "WED2B", "MONSOON BRIDAL"]),
    "airline": ("4511", ["BRITISH AIRWAYS", "EASYJET", "RYANAIR", "JET2.COM", "VIRGIN ATLANTIC"]),
    "hotel": ("7011", ["BOOKING.COM", "HOTELS.COM", "EXPEDIA", "AIRBNB"]),
    "abroad_food": ("5812", ["RESTAURANTE EL SOL", "TRATTORIA ROMA", "CAFE DE LA PAIX", "TAVERNA ATHENA",
                             "DINER ON MAIN"]),
    "abroad_shop": ("5411", ["CARREFOUR", "MERCADONA", "CONAD", "PINGO DOCE", "WALGREENS"]),
    "abroad_taxi": ("4121", ["TAXI METRO", "UBER *TRIP", "CABIFY"]),
    "abroad_hotel": ("7011", ["HOTEL PLAYA", "HOTEL CENTRAL", "MARRIOTT", "IBIS"]),
    # online shops abroad, bought from home (no trip): each sells in the currency of its country (FOREIGN_SHOPS)
    "foreign_online": ("5964", ["ZALANDO.DE", "BOL.COM", "FNAC.COM", "AMAZON.COM", "ETSY.COM US", "BESTBUY.COM"]),
}

UTILITIES: dict[str, tuple[str, list[str]]] = {
    "energy": ("4900", ["OCTOPUS ENERGY", "BRITISH GAS", "EDF ENERGY", "EON NEXT", "OVO ENERGY",
                        "SCOTTISH POWER"]),
    "water": ("4900", ["THAMES WATER", "SEVERN TRENT", "UNITED UTILITIES", "ANGLIAN WATER",
                       "YORKSHIRE WATER"]),
    "phone": ("4814", ["VODAFONE", "EE LIMITED", "O2 UK", "THREE UK", "GIFFGAFF"]),
    "broadband": ("4899", ["BT GROUP", "SKY DIGITAL", "VIRGIN MEDIA", "TALKTALK", "PLUSNET"]),
    "gym": ("7997", ["PUREGYM", "THE GYM GROUP", "NUFFIELD HEALTH", "DAVID LLOYD"]),
    "insurance": ("6300", ["ADMIRAL INSURANCE", "AVIVA INSURANCE", "DIRECT LINE", "LV INSURANCE"]),
    "tv_licence": ("4899", ["TV LICENCE MBP"]),
    "nursery": ("8351", ["BRIGHT HORIZONS", "BUSY BEES NURSERY", "KIDDI CARUS"]),
}

LETTING_AGENTS = ["FOXTONS", "OPENRENT", "SAVILLS LETTINGS", "HAMPTONS", "CONNELLS LETTINGS", "LEADERS",
                  "MARTIN & CO", "DEXTERS", "CHESTERTONS", "BELVOIR", "PRIVATE LANDLORD"]
LENDERS = ["NATIONWIDE BS", "HALIFAX", "SANTANDER UK", "BARCLAYS UK", "NATWEST", "COVENTRY BS", "YORKSHIRE BS"]
PENSION_PROVIDERS = ["AVIVA PENSION", "LEGAL & GENERAL", "SCOTTISH WIDOWS", "ROYAL LONDON", "NEST PENSION",
                     "PHOENIX LIFE"]
SOLICITORS = ["SLATER & GORDON", "IRWIN MITCHELL", "SHOOSMITHS", "MOVEWITHUS LAW", "HOME LAW SOLICITORS"]
FREELANCE_CLIENTS = ["UPWORK GLOBAL", "FIVERR INTL", "STUDIO NORTH LTD", "BLUE DOOR MEDIA", "CITY EVENTS LTD",
                     "PAYPAL TRANSFER", "STRIPE PAYMENTS UK"]
ATM_NETWORKS = ["SEGBANK", "NOTEMACHINE", "CARDTRONICS", "POST OFFICE", "LINK ATM"]

# destination country -> currency, for card spending abroad
DESTINATIONS = [("ES", "EUR"), ("FR", "EUR"), ("IT", "EUR"), ("PT", "EUR"), ("GR", "EUR"), ("DE", "EUR"),
                ("NL", "EUR"), ("IE", "EUR"), ("US", "USD")]
CURRENCIES = ["GBP", "EUR", "USD", "CHF", "PLN"]
FX_RATE_MICROS = {"GBP": 1_000_000, "EUR": 864_300, "USD": 758_900, "CHF": 924_100, "PLN": 203_400}
COUNTRIES = ["GB"] + [c for c, _ in DESTINATIONS]
# country and currency of each "foreign_online" merchant, in the order of CARD_MERCHANTS
FOREIGN_SHOPS = [("DE", "EUR"), ("NL", "EUR"), ("FR", "EUR"), ("US", "USD"), ("US", "USD"), ("US", "USD")]
JOINT_BANKS = ["NATWEST", "BARCLAYS", "HSBC UK", "LLOYDS BANK", "MONZO", "STARLING", "NATIONWIDE"]

SLOTS = ["current", "savings", "credit_card", "loan", "mortgage"]
CURRENT, SAVINGS, CARD, LOAN, MORTGAGE = range(5)


@dataclass
class Catalog:
    """The label table. `group(name)` gives the label ids of one family (e.g. all grocery merchants)."""

    description: list[str] = field(default_factory=list)
    merchant: list[str | None] = field(default_factory=list)
    mcc: list[str | None] = field(default_factory=list)
    channel: list[str] = field(default_factory=list)
    counterparty: list[str | None] = field(default_factory=list)
    own_slot: list[int] = field(default_factory=list)
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    # direct debit label -> the label of its return ("UNPAID DIRECT DEBIT <payee>"), -1 for other labels
    unpaid: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))

    def add(self, group: str, description: str, channel: str, merchant: str | None = None,
            mcc: str | None = None, counterparty: str | None = None, own_slot: int = -1) -> int:
        self.description.append(description)
        self.merchant.append(merchant)
        self.mcc.append(mcc)
        self.channel.append(channel)
        self.counterparty.append(counterparty)
        self.own_slot.append(own_slot)
        label = len(self.description) - 1
        self.groups[group] = np.append(self.groups.get(group, np.zeros(0, dtype=np.int32)), label).astype(np.int32)
        return label

    def group(self, name: str) -> np.ndarray:
        return self.groups[name]

    def one(self, name: str) -> int:
        return int(self.groups[name][0])

    def __len__(self) -> int:
        return len(self.description)


def _merchant_id(name: str) -> str:
    return "M" + "".join(ch for ch in name.upper() if ch.isalnum())[:20]


def employer_names() -> list[str]:
    return [f"{stem} {suffix}" for suffix in _EMPLOYER_SUFFIX for stem in _EMPLOYER_STEMS]


@functools.lru_cache(maxsize=1)
def catalog() -> Catalog:
    """Build the label table once per process (deterministic order)."""
    cat = Catalog()
    for category, (mcc, names) in CARD_MERCHANTS.items():
        for name in names:
            cat.add(category, name, "card", merchant=name.title(), mcc=mcc, counterparty=_merchant_id(name))
    for kind, (mcc, names) in UTILITIES.items():
        for name in names:
            cat.add(kind, f"{name} DD", "direct_debit", merchant=name.title(), mcc=mcc,
                    counterparty=_merchant_id(name))
    for region, councils in COUNCILS.items():
        for name in councils:
            cat.add(f"council:{region}", f"{name} COUNCIL TAX", "direct_debit", merchant=f"{name.title()} Council",
                    mcc="9311", counterparty=_merchant_id(name + "CC"))
    for i, name in enumerate(employer_names()):
        cp = f"EMP{i:04d}"
        cat.add("salary", f"{name} SALARY", "salary", counterparty=cp)
        cat.add("wages", f"{name} WAGES", "salary", counterparty=cp)
        cat.add("redundancy", f"{name} REDUNDANCY PAY", "salary", counterparty=cp)
    for i, name in enumerate(FREELANCE_CLIENTS):
        cat.add("freelance", f"{name} PAYMENT", "transfer_in", counterparty=f"CLI{i:04d}")
    for i, name in enumerate(PENSION_PROVIDERS):
        cat.add("pension", f"{name} PENSION PAYMENT", "transfer_in", counterparty=f"PEN{i:04d}")
    cat.add("state_pension", "DWP STATE PENSION", "benefit", counterparty="DWP")
    cat.add("universal_credit", "DWP UC", "benefit", counterparty="DWP")
    cat.add("child_benefit", "HMRC CHILD BENEFIT", "benefit", counterparty="HMRC")
    cat.add("student_loan", "STUDENT LOANS CO MAINTENANCE", "transfer_in", counterparty="SLC")
    for i, name in enumerate(LETTING_AGENTS):
        cat.add("rent", f"RENT {name}", "standing_order", counterparty=f"LET{i:04d}")
        cat.add("tenancy_deposit", f"TENANCY DEPOSIT {name}", "transfer_out", counterparty=f"LET{i:04d}")
    for i, name in enumerate(LENDERS):
        cat.add("mortgage_external", f"{name} MORTGAGE", "direct_debit", merchant=name.title(), mcc="6012",
                counterparty=f"LND{i:04d}")
    for i, name in enumerate(SOLICITORS):
        cat.add("solicitor_fee", f"{name} CONVEYANCING", "transfer_out", counterparty=f"SOL{i:04d}")
        cat.add("completion", f"{name} CLIENT AC COMPLETION", "transfer_out", counterparty=f"SOL{i:04d}")
        cat.add("mortgage_advance", f"MORTGAGE ADVANCE VIA {name}", "other", counterparty=f"SOL{i:04d}")
    for name in ATM_NETWORKS:
        cat.add("atm", f"CASH {name} ATM", "atm", mcc="6011", counterparty=_merchant_id(name + "ATM"))
    cat.add("atm_abroad", "CASH WITHDRAWAL ABROAD", "atm", mcc="6011", counterparty="MATMINTL")
    cat.add("to_savings", "TRANSFER TO SAVINGS", "transfer_out", own_slot=SAVINGS)
    cat.add("from_current", "TRANSFER FROM CURRENT ACCOUNT", "transfer_in", own_slot=CURRENT)
    cat.add("from_savings", "TRANSFER FROM SAVINGS", "transfer_in", own_slot=SAVINGS)
    cat.add("to_current", "TRANSFER TO CURRENT ACCOUNT", "transfer_out", own_slot=CURRENT)
    cat.add("card_payment", f"{BANK_NAME} CREDIT CARD PAYMENT", "direct_debit", own_slot=CARD)
    cat.add("card_payment_received", "PAYMENT RECEIVED - THANK YOU", "transfer_in", own_slot=CURRENT)
    cat.add("loan_payment", f"{BANK_NAME} LOAN REPAYMENT", "direct_debit", own_slot=LOAN)
    cat.add("loan_payment_received", "REPAYMENT RECEIVED", "transfer_in", own_slot=CURRENT)
    cat.add("mortgage_payment", f"{BANK_NAME} MORTGAGE PAYMENT", "direct_debit", own_slot=MORTGAGE)
    cat.add("mortgage_payment_received", "MORTGAGE REPAYMENT RECEIVED", "transfer_in", own_slot=CURRENT)
    cat.add("overdraft_interest", "OVERDRAFT INTEREST", "fee")
    cat.add("fx_fee", "NON-STERLING TRANSACTION FEE", "fee")
    cat.add("savings_interest", "INTEREST PAID", "interest")
    cat.add("loan_interest", "LOAN INTEREST", "interest")
    cat.add("mortgage_interest", "MORTGAGE INTEREST", "interest")
    cat.add("opening_deposit", "ACCOUNT SWITCH BALANCE TRANSFER", "transfer_in", counterparty="CASS")
    cat.add("cash_deposit", "CASH DEPOSIT BRANCH", "cash_deposit")
    for i, name in enumerate(JOINT_BANKS):
        cat.add("joint_account", f"JOINT ACCOUNT {name}", "standing_order", counterparty=f"JNT{i:04d}")
        cat.add("partner_in", f"FROM PARTNER VIA {name}", "transfer_in", counterparty=f"PTN{i:04d}")
    # a direct debit to a third party returned unpaid (the payment would have gone past the arranged limit), and
    # the bank's unpaid-item fee; added last so that the labels above keep their numbers
    unpaid = np.full(len(cat), -1, dtype=np.int32)
    for label in range(len(cat)):
        if cat.channel[label] == "direct_debit" and cat.own_slot[label] < 0:
            payee = cat.description[label].removesuffix(" DD")
            unpaid[label] = cat.add("unpaid_dd", f"UNPAID DIRECT DEBIT {payee}", "direct_debit",
                                    merchant=cat.merchant[label], counterparty=cat.counterparty[label])
    cat.unpaid = np.concatenate([unpaid, np.full(len(cat) - len(unpaid), -1, dtype=np.int32)])
    cat.add("unpaid_fee", "UNPAID ITEM FEE", "fee")
    cat.unpaid = np.concatenate([cat.unpaid, np.full(len(cat) - len(cat.unpaid), -1, dtype=np.int32)])
    # flows of accepted actions (closed loop), added last so that the labels above keep their numbers
    cat.add("loan_advance", "ADVANCE TO CURRENT ACCOUNT", "transfer_out", own_slot=CURRENT)
    cat.add("loan_advance_in", f"{BANK_NAME} PERSONAL LOAN ADVANCE", "transfer_in", own_slot=LOAN)
    cat.unpaid = np.concatenate([cat.unpaid, np.full(len(cat) - len(cat.unpaid), -1, dtype=np.int32)])
    return cat
