//! Contract `projector:projection@0.2.0` (`wit/v0.2`): contract 0.1 with the batch packed
//! into one byte list ([`pack`]). Its types and imports are 0.1's own bindings, so one
//! linker and one set of host traits serve both versions.
// Generated items carry the WIT file's own documentation, where it has some.
#![allow(missing_docs)]

use super::since_v0_1::types::Event;

wasmtime::component::bindgen!({
    path: ["../wit/v0.1", "../wit/v0.2"],
    world: "projector:projection/projection@0.2.0",
    imports: { default: trappable },
    with: {
        "projector:projection/types@0.1.0": super::since_v0_1::types,
        "projector:projection/read-model@0.1.0": super::since_v0_1::read_model,
        "projector:projection/log@0.1.0": super::since_v0_1::log,
    },
});

/// Pack `events` into `out` (cleared first) in the layout `wit/v0.2` documents.
pub fn pack(events: &[Event], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for e in events {
        for n in [
            e.revision,
            e.position.commit,
            e.position.prepare,
            e.created_ms,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        let parts: [&[u8]; 6] = [
            e.stream_id.as_bytes(),
            e.event_type.as_bytes(),
            e.event_id.as_bytes(),
            e.content_type.as_bytes(),
            &e.data,
            &e.metadata,
        ];
        for p in parts {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        }
        for p in parts {
            out.extend_from_slice(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::Position;

    #[test]
    fn packs_the_count_then_each_event_fixed_fields_lengths_and_bytes() {
        let e = Event {
            stream_id: "order-1".into(),
            event_type: "OrderPlaced".into(),
            event_id: "e1".into(),
            revision: 3,
            position: Position {
                commit: 10,
                prepare: 9,
            },
            created_ms: 77,
            content_type: "application/json".into(),
            data: b"{}".to_vec(),
            metadata: Vec::new(),
        };
        let mut out = vec![0xff; 3]; // cleared first
        pack(&[e.clone(), e], &mut out);
        let u32_at = |i: usize| u32::from_le_bytes(out[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(out[i..i + 8].try_into().unwrap());
        assert_eq!(u32_at(0), 2);
        assert_eq!(
            [u64_at(4), u64_at(12), u64_at(20), u64_at(28)],
            [3, 10, 9, 77]
        );
        let lens: Vec<u32> = (0..6).map(|i| u32_at(36 + 4 * i)).collect();
        assert_eq!(lens, [7, 11, 2, 16, 2, 0]);
        assert_eq!(&out[60..78], b"order-1OrderPlaced");
        let per_event = 32 + 24 + (7 + 11 + 2 + 16 + 2);
        assert_eq!(out.len(), 4 + 2 * per_event);
    }
}
