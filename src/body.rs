//! Reading a whole body into one `Bytes`.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;

/// The body's data as one `Bytes`. The usual single-frame body is returned as
/// it arrived (no copy, no allocation, unlike `Collected`'s queue); more
/// frames are joined. Trailers are skipped.
pub async fn to_bytes<B>(mut body: B) -> Result<Bytes, B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else { continue };
        if let Some(m) = joined.as_mut() {
            m.extend_from_slice(&data);
        } else if let Some(f) = first.take() {
            let mut m = BytesMut::with_capacity(f.len() + data.len());
            m.extend_from_slice(&f);
            m.extend_from_slice(&data);
            joined = Some(m);
        } else {
            first = Some(data);
        }
    }
    Ok(joined.map(BytesMut::freeze).or(first).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body_util::Full;
    use hyper::body::Frame;

    use super::*;

    /// A body that yields the given frames one by one.
    struct Frames(VecDeque<Result<Frame<Bytes>, std::io::Error>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    fn frames(parts: &[&'static str]) -> Frames {
        let mut items: VecDeque<_> = parts.iter().map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes())))).collect();
        items.push_back(Ok(Frame::trailers(http::HeaderMap::new())));
        Frames(items)
    }

    #[tokio::test]
    async fn joins_frames_and_keeps_a_single_one_as_it_is() {
        assert_eq!(to_bytes(frames(&[])).await.unwrap(), "");
        let one = Bytes::from_static(b"only");
        let got = to_bytes(Full::new(one.clone())).await.unwrap();
        assert_eq!(got.as_ptr(), one.as_ptr(), "a single frame is not copied");
        assert_eq!(to_bytes(frames(&["a", "bc", "", "def"])).await.unwrap(), "abcdef");
    }

    #[tokio::test]
    async fn an_error_frame_is_returned() {
        let mut body = frames(&["x"]);
        body.0.push_front(Err(std::io::Error::other("cut")));
        assert_eq!(to_bytes(body).await.unwrap_err().to_string(), "cut");
    }
}
