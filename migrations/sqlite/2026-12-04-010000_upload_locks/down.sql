DROP TABLE upload_locks;
