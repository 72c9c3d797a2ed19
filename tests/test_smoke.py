def test_register_token_create_and_view(app, create_message):
    message = create_message("first")
    assert app.get(f"/api/messages/{message['id']}").json["views"] == 1
