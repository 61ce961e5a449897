"""One round's review work: predict → score → route/select → overlays → batches and manifests."""
