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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_borrowed_unless_escaped_and_read_the_same_either_way() {
        let plain =
            br#"{"orderId":"O1","customerId":"U7","items":[{"quantity":2,"priceCents":150}]}"#;
        let e: OrderCreated = serde_json::from_slice(plain).unwrap();
        assert!(matches!(e.order_id, Cow::Borrowed("O1")));
        assert!(matches!(e.customer_id, Cow::Borrowed("U7")));
        assert_eq!((e.item_count(), e.total_cents()), (2, 300));
        // An escape cannot be borrowed: the id is decoded into a string of its own.
        let escaped = br#"{"orderId":"O\u0031"}"#;
        let r: OrderRef = serde_json::from_slice(escaped).unwrap();
        assert!(matches!(r.order_id, Cow::Owned(ref s) if s == "O1"));
    }
}
