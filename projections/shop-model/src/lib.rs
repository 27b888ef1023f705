//! The shop's event payloads (`data` of the order events), shared by the shop projections.
//! Ids are borrowed from the event's data (`Cow`: owned only when the JSON string has
//! escapes), so decoding an event copies and allocates none of them.

use std::borrow::Cow;

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
pub struct OrderCreated<'a> {
    #[serde(borrow)]
    pub order_id: Cow<'a, str>,
    #[serde(borrow)]
    pub customer_id: Cow<'a, str>,
    pub items: Vec<Item>,
}

impl OrderCreated<'_> {
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
pub struct ItemAdded<'a> {
    #[serde(borrow)]
    pub order_id: Cow<'a, str>,
    pub quantity: i64,
    pub price_cents: i64,
}

/// `OrderConfirmed`, `OrderCancelled`, `OrderShipped`: the fields the read models use.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRef<'a> {
    #[serde(borrow)]
    pub order_id: Cow<'a, str>,
}
