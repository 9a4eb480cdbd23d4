//! `switchboard.testing.v1.LibraryService` (proto/switchboard/testing/v1/library.proto), the
//! annotated service behind the REST tests, implemented with tonic. It keeps no state: every
//! answer is made of what the request carried, so a test sees how the proxy mapped an HTTP
//! request onto the message. The grpcio backend (tests/interop/backends/grpcio_server.py)
//! behaves the same.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{stream, Stream};
use prost::Message as _;
use tonic::{Code, Request, Response, Status};

use super::pb::library_service_server::LibraryService;
use super::pb::{
    Author, Book, CreateBookRequest, DeleteBookRequest, File, GetAuthorRequest, GetFileRequest,
    GetShelfRequest, ListBooksRequest, ListBooksResponse, MoveBookRequest, SearchBooksRequest,
    Shelf, ShelfEvent, UpdateBookRequest, WatchShelfRequest,
};

/// Path prefix of the service's methods.
pub(crate) const LIBRARY: &str = "/switchboard.testing.v1.LibraryService/";

/// The type URL of a detail no schema describes (for the base64 fallback).
pub(crate) const UNLISTED_DETAIL: &str = "type.googleapis.com/switchboard.testing.v1.Unlisted";

/// The service.
#[derive(Debug, Default)]
pub(crate) struct Library;

/// Request metadata whose names start with `x-` (as the test service echoes it).
fn x_metadata(md: &tonic::metadata::MetadataMap) -> std::collections::HashMap<String, String> {
    md.as_ref()
        .iter()
        .filter(|(n, _)| {
            n.as_str().starts_with("x-") && !super::backend::PROXY_HEADERS.contains(&n.as_str())
        })
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

/// INVALID_ARGUMENT with three details: a google.rpc.BadRequest, a Shelf, and a detail of a
/// type no schema knows.
fn invalid_shelf() -> Status {
    let bad_request = tonic_types::pb::BadRequest {
        field_violations: vec![tonic_types::pb::bad_request::FieldViolation {
            field: "name".into(),
            description: "shelf names are shelves/<id>".into(),
            ..Default::default()
        }],
    };
    let shelf = Shelf {
        name: "shelves/invalid".into(),
        ..Shelf::default()
    };
    let status = tonic_types::pb::Status {
        code: Code::InvalidArgument as i32,
        message: "invalid shelf".into(),
        details: vec![
            prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
                value: bad_request.encode_to_vec(),
            },
            prost_types::Any {
                type_url: "type.googleapis.com/switchboard.testing.v1.Shelf".into(),
                value: shelf.encode_to_vec(),
            },
            prost_types::Any {
                type_url: UNLISTED_DETAIL.into(),
                value: vec![1, 2, 3],
            },
        ],
    };
    Status::with_details(
        Code::InvalidArgument,
        "invalid shelf",
        status.encode_to_vec().into(),
    )
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ShelfEvent, Status>> + Send>>;

#[tonic::async_trait]
impl LibraryService for Library {
    async fn get_shelf(&self, req: Request<GetShelfRequest>) -> Result<Response<Shelf>, Status> {
        let name = req.get_ref().name.clone();
        match name.as_str() {
            "shelves/missing" => return Err(Status::not_found("no shelf shelves/missing")),
            "shelves/invalid" => return Err(invalid_shelf()),
            "shelves/slow" => tokio::time::sleep(Duration::from_secs(2)).await,
            _ => {}
        }
        let md = req.metadata();
        Ok(Response::new(Shelf {
            name,
            theme: "fiction".into(),
            metadata: x_metadata(md),
            grpc_timeout: md
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        }))
    }

    async fn list_books(
        &self,
        req: Request<ListBooksRequest>,
    ) -> Result<Response<ListBooksResponse>, Status> {
        let req = req.into_inner();
        let book = Book {
            name: format!("{}/books/1", req.parent),
            title: "One".into(),
            ..Book::default()
        };
        Ok(Response::new(ListBooksResponse {
            request: Some(req),
            books: vec![book],
            titles: vec!["One".into(), "Two".into()],
        }))
    }

    async fn create_book(&self, req: Request<CreateBookRequest>) -> Result<Response<Book>, Status> {
        let req = req.into_inner();
        let mut book = req.book.unwrap_or_default();
        book.name = format!("{}/books/{}", req.parent, req.book_id);
        Ok(Response::new(book))
    }

    async fn update_book(&self, req: Request<UpdateBookRequest>) -> Result<Response<Book>, Status> {
        let req = req.into_inner();
        let mut book = req.book.unwrap_or_default();
        book.note = format!(
            "update_mask={}",
            req.update_mask
                .map(|m| m.paths.join(","))
                .unwrap_or_default()
        );
        Ok(Response::new(book))
    }

    async fn replace_book(&self, req: Request<Book>) -> Result<Response<Book>, Status> {
        Ok(Response::new(req.into_inner()))
    }

    async fn delete_book(&self, req: Request<DeleteBookRequest>) -> Result<Response<()>, Status> {
        if req.get_ref().name.ends_with("/missing") {
            return Err(Status::not_found(format!("no book {}", req.get_ref().name)));
        }
        Ok(Response::new(()))
    }

    async fn move_book(&self, req: Request<MoveBookRequest>) -> Result<Response<Book>, Status> {
        let req = req.into_inner();
        let id = req.name.rsplit('/').next().unwrap_or_default();
        Ok(Response::new(Book {
            name: format!("{}/books/{id}", req.destination),
            ..Book::default()
        }))
    }

    async fn get_file(&self, req: Request<GetFileRequest>) -> Result<Response<File>, Status> {
        Ok(Response::new(File {
            path: req.into_inner().path,
        }))
    }

    async fn get_author(&self, req: Request<GetAuthorRequest>) -> Result<Response<Author>, Status> {
        Ok(Response::new(Author {
            author_id: req.into_inner().author_id,
        }))
    }

    async fn search_books(
        &self,
        req: Request<SearchBooksRequest>,
    ) -> Result<Response<ListBooksResponse>, Status> {
        let req = req.into_inner();
        let n = usize::try_from(req.limit.max(1)).unwrap_or(1);
        Ok(Response::new(ListBooksResponse {
            titles: vec![req.query; n],
            ..ListBooksResponse::default()
        }))
    }

    type WatchShelfStream = EventStream;

    async fn watch_shelf(
        &self,
        req: Request<WatchShelfRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let req = req.into_inner();
        let out = stream::unfold(0, move |i| {
            let req = req.clone();
            async move {
                if i > req.count {
                    return None;
                }
                if i == req.count {
                    return (req.fail_code != 0).then(|| {
                        let status = Status::new(Code::from_i32(req.fail_code), "watch failed");
                        (Err(status), i + 1)
                    });
                }
                let event = ShelfEvent {
                    name: req.name.clone(),
                    index: i,
                    payload: vec![b'x'; usize::try_from(req.payload_size).unwrap_or(0)],
                };
                Some((Ok(event), i + 1))
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn ping(&self, _req: Request<()>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }
}
