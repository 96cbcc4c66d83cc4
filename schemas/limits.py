"""The provider's request contract as data: field limits from the capture seed and api.md.

One table that the validator (schemas/shipments.py) and the sandbox both read, so the two can
never disagree about what the API accepts.
"""

from __future__ import annotations

MAX_AMOUNT = 200_000_000  # captured_amount, unit_price, total_amount, total_discount_amount
MAX_ORDER_LINES = 1000
MAX_SHIPPING_INFO = 500
MAX_BODY_BYTES = 1_000_000  # 413 above

LINE_TYPES = (
    "physical", "discount", "shipping_fee", "sales_tax", "store_credit", "gift_card", "digital",
    "surcharge", "return_fee", "package",
)
SHIPPING_METHODS = (
    "PickUpStore", "Home", "BoxReg", "BoxUnreg", "PickUpPoint", "Own", "Postal", "DHLPackstation",
    "Digital", "Undefined", "PickUpWarehouse", "ClickCollect", "PalletDelivery",
)
SHIPPING_METHOD_PATTERN = "^(" + "|".join(SHIPPING_METHODS) + ")$"

# Maximum string lengths, by field, at each level of the body.
CAPTURE_STRING_LIMITS: dict[str, int] = {"description": 255, "reference": 255}
LINE_STRING_LIMITS: dict[str, int] = {
    "name": 255, "reference": 255, "quantity_unit": 10, "merchant_data": 1024,
    "image_url": 1024, "product_url": 1024,
}
PRODUCT_IDENTIFIER_LIMITS: dict[str, int] = {
    "brand": 70, "category_path": 750, "global_trade_item_number": 50,
    "manufacturer_part_number": 70, "color": 64, "size": 64,
}
SHIPPING_INFO_LIMITS: dict[str, int] = {
    "shipping_company": 100, "shipping_method": 64, "tracking_number": 100, "tracking_uri": 1024,
    "return_shipping_company": 100, "return_tracking_number": 100, "return_tracking_uri": 1024,
}
