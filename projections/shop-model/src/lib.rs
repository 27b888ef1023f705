//! The shop's event payloads (`data` of the order events), shared by the shop projections.

use serde::Deserialize;

/// One line of an order.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub quantity: i64,
    pub price_cents: i64,
}

/// `OrderCreated`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated {
    pub order_id: String,
    pub customer_id: String,
    pub items: Vec<Item>,
}

impl OrderCreated {
    /// Sum of the items' quantities.
    pub fn item_count(&self) -> i64 {
        self.items.iter().map(|i| i.quantity).sum()
    }

    /// Sum of quantity × price over the items.
    pub fn total_cents(&self) -> i64 {
        self.items.iter().map(|i| i.quantity * i.price_cents).sum()
    }
}

/// `ItemAdded` (on an order stream).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemAdded {
    pub order_id: String,
    pub quantity: i64,
    pub price_cents: i64,
}

/// `OrderConfirmed`, `OrderCancelled`, `OrderShipped`: the fields the read models use.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRef {
    pub order_id: String,
}
