//! `GET /v1/cluster/status`: the cluster status the metadata leader assembles.
