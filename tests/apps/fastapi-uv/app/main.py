from fastapi import FastAPI

app = FastAPI(title="fastapi-uv")

ITEMS = {1: "apple", 2: "banana"}


@app.get("/")
def root() -> dict[str, str]:
    return {"app": "corpus:fastapi-uv"}


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/items/{item_id}")
def read_item(item_id: int) -> dict[str, int | str | None]:
    return {"id": item_id, "name": ITEMS.get(item_id)}
